"""The `jobferry` command: submit, follow and cancel workflows; run workers; run the demo.

Errors go to stderr in red with exit status 1; `--json` gives machine-readable output.
Settings come from `JOBFERRY_*` variables (see the README's configuration table).
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from celery import signals
from pydantic import ValidationError
from rich.console import Console

from scheduler import (
    EnvVar,
    Jobferry,
    JobferryError,
    SecretKeyRef,
    WorkflowOutcome,
    WorkflowRequest,
    WorkflowStatus,
)
from scheduler.settings import (
    ENV_PREFIX,
    Settings,
    describe_request_error,
    load_settings,
    redact_url,
    reference_table,
)

F = TypeVar("F", bound=Callable[..., Any])

stdout = Console(width=None if sys.stdout.isatty() else 120)
stderr = Console(stderr=True)


def fail(message: str) -> None:
    stderr.print(f"[red]error:[/red] {message}", highlight=False, markup=True, soft_wrap=True)
    sys.exit(1)


def friendly_errors(func: F) -> F:
    """Turn jobferry and validation errors into one red message and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ValidationError as exc:
            fail(describe_request_error(exc))
        except JobferryError as exc:
            fail(str(exc))
        return None

    return wrapper  # type: ignore[return-value]


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=what)
        pairs[key] = value
    return pairs


def _env(literal: tuple[str, ...], secrets: tuple[str, ...]) -> list[EnvVar]:
    env = [EnvVar(name=k, value=v) for k, v in _pairs(literal, "--env").items()]
    for name, ref in _pairs(secrets, "--env-secret").items():
        secret, sep, key = ref.partition(":")
        if not sep:
            raise click.BadParameter(f"{ref!r} is not SECRET:KEY", param_hint="--env-secret")
        env.append(EnvVar(name=name, secret_key_ref=SecretKeyRef(name=secret, key=key)))
    return env


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """jobferry: run long, heavy work as Kubernetes Jobs from a Celery queue on Redis."""


@main.command(context_settings={"ignore_unknown_options": False})
@click.option("--id", "workflow_id", help="Workflow id (1-63 of [A-Za-z0-9-_.]).")
@click.option("--image", help="Container image, e.g. ghcr.io/acme/report:1.4.2.")
@click.option(
    "-f",
    "--file",
    "request_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A JSON workflow request instead of the options.",
)
@click.option("--namespace", default="default", show_default=True)
@click.option("--cpu-request")
@click.option("--cpu-limit")
@click.option("--memory-request")
@click.option("--memory-limit")
@click.option("--backoff-limit", type=int, default=3, show_default=True)
@click.option(
    "--ttl",
    "ttl_seconds",
    type=int,
    default=3600,
    show_default=True,
    help="Seconds a finished Job is kept.",
)
@click.option("--active-deadline", type=int, help="Kubernetes' limit on the Job, seconds.")
@click.option(
    "--deadline",
    type=int,
    default=24 * 3600,
    show_default=True,
    help="The whole workflow's limit from submission, seconds.",
)
@click.option("--env", multiple=True, metavar="NAME=VALUE")
@click.option("--env-secret", multiple=True, metavar="NAME=SECRET:KEY")
@click.option("--label", multiple=True, metavar="KEY=VALUE")
@click.option("--annotation", multiple=True, metavar="KEY=VALUE")
@click.option("--service-account")
@click.option("--wait", is_flag=True, help="Wait for the outcome, with a live status line.")
@click.option("--timeout", type=float, help="With --wait: give up waiting after this many s.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.argument("command", nargs=-1)
@friendly_errors
def submit(**options: Any) -> None:
    """Submit a workflow: jobferry submit --id X --image IMG -- COMMAND [ARGS...]"""
    request = _request(options)
    client = Jobferry(load_settings())
    handle = client.submit(request)
    if not options["wait"]:
        payload = {"workflow_id": handle.workflow_id, "job_name": handle.status().job_name}
        _emit(payload, options["as_json"], f"queued {handle.workflow_id}")
        return
    outcome = _wait(client, handle.workflow_id, options["timeout"], options["as_json"])
    _print_outcome(outcome, options["as_json"])
    sys.exit(0 if outcome.ok else 2)


def _request(options: dict[str, Any]) -> WorkflowRequest:
    if options["request_file"] is not None:
        return WorkflowRequest.model_validate_json(options["request_file"].read_text())
    if not options["workflow_id"] or not options["image"]:
        raise click.UsageError("give --id and --image (or --file)")
    if not options["command"]:
        raise click.UsageError("give the command after '--', e.g. -- python -m report")
    return WorkflowRequest(
        workflow_id=options["workflow_id"],
        image=options["image"],
        command=list(options["command"]),
        namespace=options["namespace"],
        cpu_request=options["cpu_request"],
        cpu_limit=options["cpu_limit"],
        memory_request=options["memory_request"],
        memory_limit=options["memory_limit"],
        backoff_limit=options["backoff_limit"],
        ttl_seconds_after_finished=options["ttl_seconds"],
        active_deadline_seconds=options["active_deadline"],
        deadline_seconds=options["deadline"],
        env=_env(options["env"], options["env_secret"]),
        labels=_pairs(options["label"], "--label"),
        annotations=_pairs(options["annotation"], "--annotation"),
        service_account=options["service_account"],
    )


def _wait(
    client: Jobferry, workflow_id: str, timeout: float | None, quiet: bool
) -> WorkflowOutcome:
    if quiet or not stderr.is_terminal:
        return client.wait(workflow_id, timeout=timeout)
    with stderr.status(f"{workflow_id}: queued") as line:

        def show(status: WorkflowStatus) -> None:
            line.update(f"{workflow_id}: {status.state.value} - {status.detail}")

        return client.wait(workflow_id, timeout=timeout, on_poll=show)


@main.command()
@click.argument("workflow_id")
@click.option("--json", "as_json", is_flag=True)
@friendly_errors
def status(workflow_id: str, as_json: bool) -> None:
    """Show where a workflow is now."""
    record = Jobferry(load_settings()).status(workflow_id)
    if as_json:
        click.echo(record.model_dump_json(indent=2, exclude={"outcome"}))
        return
    submitted = record.submitted_at.strftime("%Y-%m-%d %H:%M:%S")
    updated = record.updated_at.strftime("%H:%M:%S")
    text = (
        f"{record.workflow_id}: [bold]{record.state.value}[/bold] - {record.detail}\n"
        f"  Job {record.namespace}/{record.job_name}, submitted {submitted}Z, updated {updated}Z"
    )
    if record.cancel_requested:
        text += "\n  cancel requested"
    stdout.print(
        text,
        highlight=False,
    )


@main.command()
@click.argument("workflow_id")
@click.option("--json", "as_json", is_flag=True)
@friendly_errors
def outcome(workflow_id: str, as_json: bool) -> None:
    """Show how a workflow ended (exit 2 while it still runs)."""
    result = Jobferry(load_settings()).outcome(workflow_id)
    if result is None:
        stderr.print(f"{workflow_id} has not finished yet; see `jobferry status {workflow_id}`")
        sys.exit(2)
    _print_outcome(result, as_json)


@main.command()
@click.argument("workflow_id")
@friendly_errors
def cancel(workflow_id: str) -> None:
    """Cancel a workflow: its Job and pods are deleted, its outcome is `cancelled`."""
    record = Jobferry(load_settings()).cancel(workflow_id)
    if record.outcome is not None:
        stdout.print(f"{workflow_id} already finished: {record.outcome.state.value}")
    else:
        stdout.print(f"cancelling {workflow_id} (Job {record.namespace}/{record.job_name})")


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("-Q", "--queues", help="Queues to consume; default: launch and status queues.")
@click.option("-c", "--concurrency", type=int, default=4, show_default=True)
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@click.option(
    "--watch",
    is_flag=True,
    help="Also hold the namespaces' watches in this process, as `jobferry watcher` does "
    "(threads or solo pool only).",
)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@friendly_errors
def worker(
    queues: str | None,
    concurrency: int,
    loglevel: str,
    watch: bool,
    celery_args: tuple[str, ...],
) -> None:
    """Run a Celery worker (extra arguments go to `celery worker`)."""
    settings = load_settings()
    if watch:
        pool = _pool_of(celery_args)
        if pool not in ("threads", "solo"):
            raise click.UsageError(
                f"--watch needs -P threads or -P solo (the pool is {pool}): a prefork worker "
                "forks its children while the watch threads run; run `jobferry watcher` beside "
                "a prefork worker instead"
            )
        if settings.backend != "kubernetes":
            raise click.UsageError("--watch needs JOBFERRY_BACKEND=kubernetes (there is no watch)")
    if settings.metrics_port:
        # Before anything imports prometheus_client, which reads the variable on import.
        _prepare_metrics_dir()
    from workers.checks import preflight

    preflight(settings)
    if settings.soft_shutdown_seconds > 0:
        # Celery's warm shutdown waits for running tasks without limit, and a pod killed after
        # its grace period leaves every message it held (status checks in countdown included)
        # unacked until the visibility timeout. Mapped to Celery's cold shutdown, SIGTERM gives
        # running tasks `soft_shutdown_seconds`, then requeues them and every held message.
        # Billiard reads this when it is first imported, which is below.
        os.environ["REMAP_SIGTERM"] = "SIGQUIT"
    from workers.app import app

    if settings.metrics_port:
        # Once the pool's children are forked (they need no copy of the listening socket)
        # and logging is set up (the line saying where metrics are is in the log).
        signals.worker_ready.connect(lambda **_: _serve_metrics(settings), weak=False)
    if watch:
        from workers.watcher import start_watcher

        def watch_here(**_: Any) -> None:
            stop = start_watcher(settings)
            # Sent for every shutdown a signal starts, cold ones too (worker_shutdown is not).
            signals.worker_shutting_down.connect(lambda **_: stop(), weak=False)

        signals.worker_ready.connect(watch_here, weak=False)
    queues = queues or f"{settings.launch_queue},{settings.status_queue}"
    # No -E: Celery reads worker_send_task_events (JOBFERRY_TASK_EVENTS) from the app's config.
    app.worker_main(["worker", "-Q", queues, "-c", str(concurrency), "-l", loglevel, *celery_args])


def _pool_of(celery_args: tuple[str, ...]) -> str:
    """The pool `celery worker` will use, from its arguments (default prefork)."""
    pool = "prefork"
    for index, arg in enumerate(celery_args):
        if arg in ("-P", "--pool") and index + 1 < len(celery_args):
            pool = celery_args[index + 1]
        elif arg.startswith("--pool="):
            pool = arg.removeprefix("--pool=")
        elif arg.startswith("-P") and len(arg) > 2:
            pool = arg[2:]
    return pool


def _prepare_metrics_dir() -> None:
    """Give the prefork children a clean PROMETHEUS_MULTIPROC_DIR to count into.

    An operator's directory is emptied (counts of a previous run must not add up with ours);
    without one, a private temporary directory is made and removed at exit.
    """
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess dir was set")
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        return
    directory = Path(tempfile.mkdtemp(prefix="jobferry-metrics-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def _serve_metrics(settings: Settings) -> None:
    import redis

    from scheduler.records import RecordStore
    from workers.telemetry import serve_metrics

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    serve_metrics(
        settings.metrics_port,
        RecordStore(client, settings.outcome_ttl_seconds, settings.app_label),
    )


@main.command()
@click.option(
    "-d",
    "--destination",
    help="Worker node name; default: celery@<this host's name>, the name `jobferry worker` takes.",
)
@click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for a reply."
)
@friendly_errors
def ping(destination: str | None, timeout: float) -> None:
    """Exit 0 if this host's worker answers through the broker (liveness/readiness probe)."""
    from celery.utils.nodenames import default_nodename
    from kombu.exceptions import OperationalError

    from scheduler.celeryconfig import make_celery

    settings = load_settings()
    node = destination or default_nodename("")
    app = make_celery(settings)
    try:
        with app.connection_for_write() as connection:
            # One bounded attempt: a probe that hangs on a dead broker tells nothing.
            connection.ensure_connection(max_retries=1, timeout=math.ceil(timeout))
            replies = app.control.ping(destination=[node], timeout=timeout, connection=connection)
    # Redis refused or timed out: the worker cannot be taking tasks either.
    except (OperationalError, OSError) as exc:
        fail(f"cannot reach the broker at {redact_url(settings.redis_url)}: {exc}")
    finally:
        app.close()
    if not any(node in reply for reply in replies or []):
        fail(
            f"{node} did not answer within {timeout:g} s: is `jobferry worker` running on this "
            f"host, consuming from {redact_url(settings.redis_url)}?"
        )
    stdout.print(f"{node}: pong", highlight=False)


@main.command()
@click.option(
    "--schedules",
    "schedules_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Schedules file (YAML); default: JOBFERRY_SCHEDULES_FILE.",
)
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@friendly_errors
def beat(schedules_path: Path | None, loglevel: str) -> None:
    """Run beat: submit the schedules file's workflows, one per slot, however many beats run."""
    from scheduler.schedules import load_schedules

    settings = load_settings()
    path = schedules_path or settings.schedules_file
    # The whole file is checked before beat starts, so a bad entry never waits for its slot.
    schedules = load_schedules(path) if path is not None else []
    if not schedules:
        stderr.print("no schedules file given: beat runs only the app's own beat entries")
    from workers.app import app
    from workers.beat import prepare

    prepare(app, settings, schedules)
    app.Beat(loglevel=loglevel).run()


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--port", type=int, default=5555, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--no-auth",
    is_flag=True,
    help="Run without authentication (only behind a proxy that authenticates).",
)
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
@friendly_errors
def flower(port: int, address: str, no_auth: bool, flower_args: tuple[str, ...]) -> None:
    """Run Flower for jobferry's workers, with basic auth from FLOWER_BASIC_AUTH (user:password)."""
    from workers.monitor import flower_argv

    argv = flower_argv(os.environ, port=port, address=address, no_auth=no_auth)
    from workers.app import app

    app.start(["flower", *argv, *flower_args])


@main.command()
@click.option(
    "--health",
    is_flag=True,
    help="Print each namespace's watch health; exit 1 when one is stale (a liveness probe).",
)
@click.option("--json", "as_json", is_flag=True, help="With --health: print JSON.")
@friendly_errors
def watcher(health: bool, as_json: bool) -> None:
    """Watch Jobs and pods per namespace into the status cache, and wake checks on changes."""
    settings = load_settings()
    if health:
        from workers.watcher import health_report

        ok, healths = health_report(settings)
        if as_json:
            click.echo(json.dumps([h.__dict__ for h in healths], indent=2))
        for h in [] if as_json else healths:
            age = "never" if h.heartbeat_age is None else f"{h.heartbeat_age:.1f} s ago"
            state = "ok" if h.ok(settings.watch_stale_seconds) else "STALE"
            stdout.print(
                f"{h.namespace}: {state}, heartbeat {age}, holder {h.holder or '-'}, "
                f"jobs rv {h.jobs_rv or '-'}, pods rv {h.pods_rv or '-'}, relists {h.relists}"
                + (f", last error: {h.last_error}" if h.last_error else ""),
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        if not healths:
            stderr.print("no namespace to watch yet (no workflow submitted, no watch_namespaces)")
        sys.exit(0 if ok else 1)
    from workers.checks import preflight

    preflight(settings)
    if settings.backend != "kubernetes":
        fail("the watcher watches Kubernetes; JOBFERRY_BACKEND is " + repr(settings.backend))
    from workers import logconfig
    from workers.watcher import run_watcher

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logconfig.apply(logging.getLogger(), settings.log_format)
    run_watcher(settings)


@main.command()
@click.option("--reference", is_flag=True, help="Print the reference table (markdown).")
@friendly_errors
def config(reference: bool) -> None:
    """Show the settings in force (from JOBFERRY_* variables), passwords hidden."""
    if reference:
        click.echo(reference_table())
        return
    settings = load_settings()
    for name, value in settings.model_dump().items():
        shown = redact_url(value) if isinstance(value, str) and "://" in value else value
        click.echo(f"{ENV_PREFIX}{name.upper()}={'' if shown is None else shown}")


@main.command()
@click.option("--keep", is_flag=True, help="Keep the state directory for a look afterwards.")
@click.option(
    "--redis",
    type=click.Choice(["auto", "redis-server", "fakeredis"]),
    default="auto",
    show_default=True,
    help="What serves the embedded Redis; auto takes redis-server when it is on PATH.",
)
@friendly_errors
def demo(keep: bool, redis: str) -> None:
    """Run three workflows on an embedded Redis and the local backend, and show the outcomes."""
    from workers.demo import run_demo

    sys.exit(run_demo(stdout, keep=keep, redis=redis))


def _emit(payload: dict[str, Any], as_json: bool, text: str) -> None:
    if as_json:
        click.echo(json.dumps(payload, indent=2))
    else:
        stdout.print(text, highlight=False)


def _print_outcome(result: WorkflowOutcome, as_json: bool) -> None:
    if as_json:
        click.echo(result.model_dump_json(indent=2))
        return
    colour = "green" if result.ok else "red"
    duration = result.duration_seconds
    lines = [
        f"{result.workflow_id}: [{colour}]{result.state.value}[/{colour}] ({result.reason})",
        f"  {result.message}",
        f"  Job {result.namespace}/{result.job_name}, attempts {result.attempts}, exit code "
        f"{result.exit_code if result.exit_code is not None else '-'}"
        + (f", ran {duration:.1f} s" if duration is not None else ""),
    ]
    if result.log_tail:
        lines.append("  log tail:")
        lines += [f"    {line}" for line in result.log_tail.rstrip().splitlines()[-20:]]
    stdout.print("\n".join(lines), highlight=False, markup=True)
