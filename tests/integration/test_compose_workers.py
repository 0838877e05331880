"""The compose file's two worker pools, run as it runs them: a workflow needs both.

docker-compose.yml splits the launch queue and the status queue across two containers that
share the local backend's pid namespace and state volume. No Docker engine runs here, so the
two services' own commands and settings run as processes on this host (same pids, one state
directory), with only Redis and the state directory moved to the test's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler import Jobferry, OutcomeState, WorkflowRequest, load_settings
from tests.deploy.test_compose import FILE_SETS, compose_config
from tests.services import ROOT


@pytest.fixture
def compose_workers(redis_url: str, tmp_path: Path) -> Iterator[dict[str, Path]]:
    result = compose_config(FILE_SETS["laptop"], FLOWER_BASIC_AUTH="admin:test-only")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    processes, logs = [], {}
    for name in ("worker-launch", "worker-status"):
        service = services[name]
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBFERRY_")}
        env.pop("KUBECONFIG", None)
        env.update(service["environment"])
        env.update(JOBFERRY_REDIS_URL=redis_url, JOBFERRY_LOCAL_STATE_DIR=str(tmp_path / "jobs"))
        logs[name] = tmp_path / f"{name}.log"
        with open(logs[name], "wb") as log:
            # Two workers on one host need distinct node names (each container has its own).
            argv = [*service["command"], "-n", f"{name}@%h", "--without-mingle"]
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "workers", *argv],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                    start_new_session=True,
                )
            )
    yield logs
    for process in processes:
        os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        # A worker that ignores TERM is killed: tests must not leave processes behind.
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_a_workflow_passes_through_the_launch_pool_and_the_status_pool(
    compose_workers: dict[str, Path], redis_url: str, clean_env: None
) -> None:
    client = Jobferry(load_settings(environ={}, redis_url=redis_url))
    try:
        handle = client.submit(
            WorkflowRequest(
                workflow_id="compose-split",
                image="unused",
                command=[sys.executable, "-c", "print('hello from the launch pool')"],
            )
        )
        outcome = handle.wait(timeout=120)
    finally:
        client.close()
    logs = {name: path.read_text(errors="replace") for name, path in compose_workers.items()}
    assert outcome.state is OutcomeState.SUCCEEDED, logs
    assert "hello from the launch pool" in (outcome.log_tail or "")
    # Each pool ran only its own queue's tasks.
    launch, status = logs["worker-launch"], logs["worker-status"]
    assert "Task jobferry.launch[" in launch and "Task jobferry.check[" not in launch
    assert "Task jobferry.check[" in status and "Task jobferry.launch[" not in status
