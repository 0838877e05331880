"""The whole pipeline on the local backend: submit -> Redis -> real workers -> outcome."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from subprocess import CompletedProcess

import redis

from scheduler import OutcomeState, WorkflowRequest, WorkflowState
from scheduler.celeryconfig import outcome_task_id
from tests.integration.conftest import Pipeline
from tests.services import wait_for


def jobferry(env: dict[str, str], *args: str, timeout: float = 90) -> CompletedProcess[str]:
    """Run the `jobferry` CLI as a user does, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "workers", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_success_failure_and_deadline(local_pipeline: Pipeline) -> None:
    client = local_pipeline.client
    ok = client.submit(
        WorkflowRequest(
            workflow_id="ok", image="local", command=["sh", "-c", "echo hello; echo world"]
        )
    )
    bad = client.submit(
        WorkflowRequest(
            workflow_id="bad",
            image="local",
            command=["sh", "-c", "echo oops >&2; exit 4"],
            backoff_limit=1,
        )
    )
    slow = client.submit(
        WorkflowRequest(
            workflow_id="slow", image="local", command=["sleep", "120"], deadline_seconds=3
        )
    )
    done = ok.wait(timeout=60)
    assert done.state is OutcomeState.SUCCEEDED
    assert done.exit_code == 0 and done.attempts == 1
    assert done.log_tail == "hello\nworld\n"
    assert done.submitted_at and done.created_at and done.started_at and done.finished_at
    assert done.submitted_at <= done.created_at <= done.started_at <= done.finished_at

    failed = bad.wait(timeout=60)
    assert failed.state is OutcomeState.FAILED
    assert failed.reason == "BackoffLimitExceeded"
    assert failed.exit_code == 4 and failed.attempts == 2
    assert "oops" in failed.log_tail

    late = slow.wait(timeout=60)
    assert late.state is OutcomeState.DEADLINE_EXCEEDED
    assert late.reason == "DeadlineExceeded"

    # The outcome is also the Celery result of the final status check, by workflow id.
    result = client.celery.AsyncResult(outcome_task_id("ok"))
    assert result.get(timeout=10)["state"] == "succeeded"


def test_the_check_loop_stores_only_the_outcome(local_pipeline: Pipeline) -> None:
    # Each look at a running Job sends the next one and stores nothing: no RETRY state and
    # no traceback per look. The look that ends the workflow stores the outcome.
    client = local_pipeline.client
    handle = client.submit(
        WorkflowRequest(workflow_id="looked-at", image="local", command=["sleep", "5"])
    )
    store = redis.Redis.from_url(client.settings.redis_url)
    key = "jobferry:workflow:looked-at"
    looks: set[bytes] = set()

    def looked_three_times() -> bool:
        looks.add(store.hget(key, "last_checked") or b"")
        return handle.status().state is WorkflowState.RUNNING and len(looks) >= 4

    wait_for("three looks at the running Job", looked_three_times, timeout=30, interval=0.05)
    result = client.celery.AsyncResult(outcome_task_id("looked-at"))
    assert result.state == "PENDING"
    assert handle.wait(timeout=60).state is OutcomeState.SUCCEEDED
    assert result.get(timeout=10)["state"] == "succeeded"
    store.close()


def test_a_submit_subscribes_to_no_result(local_pipeline: Pipeline) -> None:
    # The launch stores no result. Sent without ignore_result, each submit would subscribe the
    # producer to the launch's result channel, a subscription nothing ever answers.
    client = local_pipeline.client
    store = redis.Redis.from_url(client.settings.redis_url)

    def subscribes() -> int:
        stats = store.info("commandstats").get("cmdstat_subscribe") or {}
        return int(stats.get("calls", 0))

    before = subscribes()
    handles = [
        client.submit(WorkflowRequest(workflow_id=f"quiet-{i}", image="local", command=["true"]))
        for i in range(3)
    ]
    assert subscribes() == before
    assert all(h.wait(timeout=60).state is OutcomeState.SUCCEEDED for h in handles)
    store.close()


def test_resubmitting_the_same_request_runs_it_once(local_pipeline: Pipeline) -> None:
    request = WorkflowRequest(
        workflow_id="once", image="local", command=["sh", "-c", "echo ran >> ../../runs.txt"]
    )
    first = local_pipeline.client.submit(request)
    second = local_pipeline.client.submit(request)
    assert first.workflow_id == second.workflow_id
    assert first.wait(timeout=60).state is OutcomeState.SUCCEEDED
    jobs_root = local_pipeline.env["JOBFERRY_LOCAL_STATE_DIR"]
    assert Path(jobs_root, "runs.txt").read_text() == "ran\n"


def test_cli_outcome_of_a_running_workflow_exits_2(local_pipeline: Pipeline) -> None:
    client = local_pipeline.client
    handle = client.submit(
        WorkflowRequest(workflow_id="still-running", image="local", command=["sleep", "60"])
    )
    wait_for("the pod running", lambda: "running" in handle.status().detail, timeout=30)
    result = jobferry(local_pipeline.env, "outcome", "still-running")
    assert result.returncode == 2
    assert "has not finished yet" in result.stderr
    cancelled = jobferry(local_pipeline.env, "cancel", "still-running")
    assert cancelled.returncode == 0 and "cancelling still-running" in cancelled.stdout
    assert handle.wait(timeout=30).state is OutcomeState.CANCELLED


def test_cancel_stops_the_job(local_pipeline: Pipeline) -> None:
    client = local_pipeline.client
    handle = client.submit(
        WorkflowRequest(workflow_id="long", image="local", command=["sleep", "120"])
    )
    wait_for("the pod running", lambda: "running" in handle.status().detail, timeout=30)
    handle.cancel()
    outcome = handle.wait(timeout=30)
    assert outcome.state is OutcomeState.CANCELLED
    assert handle.status().state is WorkflowState.FINISHED


def test_cli_submit_wait_status_outcome(local_pipeline: Pipeline) -> None:
    env = local_pipeline.env
    submitted = jobferry(
        env,
        "submit",
        "--id",
        "cli-1",
        "--image",
        "local",
        "--wait",
        "--json",
        "--",
        "sh",
        "-c",
        "echo from-cli",
    )
    assert submitted.returncode == 0, submitted.stderr
    assert json.loads(submitted.stdout)["log_tail"] == "from-cli\n"
    status = jobferry(env, "status", "cli-1")
    assert "cli-1: finished" in status.stdout
    outcome = jobferry(env, "outcome", "cli-1", "--json")
    assert json.loads(outcome.stdout)["state"] == "succeeded"
    missing = jobferry(env, "status", "no-such")
    assert missing.returncode == 1
    assert "no workflow 'no-such'" in missing.stderr
    bad = jobferry(
        env, "submit", "--id", "x", "--image", "local", "--memory-limit", "1GB", "--", "true"
    )
    assert bad.returncode == 1
    assert "memory_limit" in bad.stderr and "unknown suffix 'GB'" in bad.stderr


def test_worker_refuses_to_start_without_cluster_credentials(
    local_pipeline: Pipeline, tmp_path: Path
) -> None:
    env = {**local_pipeline.env, "JOBFERRY_BACKEND": "kubernetes", "HOME": str(tmp_path)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    result = jobferry(env, "worker", timeout=60)
    assert result.returncode == 1
    assert "no Kubernetes configuration found" in result.stderr
    assert f"{tmp_path}/.kube/config (no such file)" in result.stderr


def test_worker_refuses_to_start_without_redis(local_pipeline: Pipeline) -> None:
    env = {**local_pipeline.env, "JOBFERRY_REDIS_URL": "redis://:pw-123456@127.0.0.1:1/0"}
    result = jobferry(env, "worker", timeout=60)
    assert result.returncode == 1
    assert "cannot reach Redis at redis://:***@127.0.0.1:1/0" in result.stderr
    assert "pw-123456" not in result.stderr


def test_a_lost_launch_still_ends_at_the_deadline(local_pipeline: Pipeline) -> None:
    from scheduler.celeryconfig import CHECK_TASK, outcome_task_id

    client = local_pipeline.client
    request = WorkflowRequest(
        workflow_id="lost-launch", image="local", command=["true"], deadline_seconds=2
    )
    # The record is written, but the launch message never reaches a worker.
    assert client.records.create(request) is None
    client.celery.send_task(
        CHECK_TASK, args=["lost-launch"], task_id=outcome_task_id("lost-launch")
    )
    outcome = client.wait("lost-launch", timeout=30)
    assert (outcome.state, outcome.reason) == (OutcomeState.DEADLINE_EXCEEDED, "DeadlineExceeded")
    assert "before its Job was launched" in outcome.message
