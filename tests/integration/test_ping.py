"""`jobferry ping`, the workers' liveness and readiness probe, against a real worker process."""

from __future__ import annotations

import subprocess
import sys
from subprocess import CompletedProcess

from celery.utils.nodenames import default_nodename

from tests.integration.conftest import Pipeline
from tests.services import wait_for


def ping(env: dict[str, str], *args: str) -> CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers", "ping", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_ping_answers_while_this_hosts_worker_runs_and_fails_once_it_stopped(
    local_pipeline: Pipeline,
) -> None:
    node = default_nodename("")
    answered = wait_for(
        "the worker to answer `jobferry ping`",
        lambda: (r := ping(local_pipeline.env)).returncode == 0 and r,
        timeout=90,
        interval=1,
    )
    assert answered.stdout.strip() == f"{node}: pong"

    local_pipeline.workers[0].stop()
    stopped = ping(local_pipeline.env, "--timeout", "2")
    assert stopped.returncode == 1
    assert f"{node} did not answer within 2 s" in stopped.stderr


def test_ping_names_the_node_it_asked_for(local_pipeline: Pipeline) -> None:
    wait_for("the worker to start", lambda: ping(local_pipeline.env).returncode == 0, 90, 1)
    other = ping(local_pipeline.env, "-d", "celery@not-this-host", "--timeout", "2")
    assert other.returncode == 1
    assert "celery@not-this-host did not answer within 2 s" in other.stderr


def test_ping_without_redis_fails_fast_and_hides_the_password(local_pipeline: Pipeline) -> None:
    env = {**local_pipeline.env, "JOBFERRY_REDIS_URL": "redis://:pw-123456@127.0.0.1:1/0"}
    result = ping(env, "--timeout", "2")
    assert result.returncode == 1
    assert "cannot reach the broker at redis://:***@127.0.0.1:1/0" in result.stderr
    assert "pw-123456" not in result.stderr
