"""What deployment files may ask of jobferry: real subcommands, real options, real settings.

The compose file and the Kubernetes manifests are checked with the CLI's own click commands
and `load_settings`, so a renamed option or a misspelt `JOBFERRY_*` variable fails a test
instead of a deployment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import click

from scheduler.errors import RequestError
from scheduler.settings import ENV_PREFIX, load_settings

# Variables a deployment may set besides jobferry's settings: read by Flower, OpenTelemetry's
# SDK, the Kubernetes client or Python itself.
OTHER_PREFIXES = ("FLOWER_", "OTEL_")
OTHER_VARIABLES = {"KUBECONFIG", "TZ", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "HOME"}


def command_problem(argv: Sequence[str]) -> str | None:
    """Why `jobferry <argv>` would not start, or None if click accepts it."""
    from workers.cli import main

    if list(argv) in (["--help"], ["-h"]):
        return None
    if not argv:
        return "an empty jobferry command"
    name, *args = argv
    command = main.commands.get(name)
    if command is None:
        return (
            f"`jobferry {name}` is not a jobferry subcommand "
            f"(there are: {', '.join(sorted(main.commands))})"
        )
    try:
        command.make_context(f"jobferry {name}", list(args))
    # click's own message names the option or argument it refused.
    except click.ClickException as exc:
        return f"`jobferry {' '.join(argv)}`: {exc.format_message()}"
    return None


def environment_problems(env: Mapping[str, str]) -> list[str]:
    """Each variable that is neither a valid jobferry setting nor one another tool reads."""
    problems = [
        f"{name}: not a jobferry setting nor a variable of Flower, OpenTelemetry or Python"
        for name in sorted(env)
        if not name.startswith((ENV_PREFIX, *OTHER_PREFIXES)) and name not in OTHER_VARIABLES
    ]
    settings = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    overrides = {k.removeprefix(ENV_PREFIX).lower(): v for k, v in settings.items()}
    try:
        load_settings(environ=settings, **overrides)
    # load_settings names each unknown (with a did-you-mean) or invalid variable.
    except RequestError as exc:
        problems += [line.strip() for line in str(exc).splitlines()[1:]]
    return problems


def is_pinned(image: str) -> bool:
    """An exact version tag: never `latest`, never a bare major or minor like `7` or `7.4`."""
    _, sep, tag = image.rpartition(":")
    return (
        bool(sep)
        and "/" not in tag
        and re.fullmatch(r"v?\d+\.\d+\.\d+([.-][\w.-]+)?", tag) is not None
    )
