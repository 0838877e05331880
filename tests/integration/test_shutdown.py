"""SIGTERM to a worker that holds status checks in countdown: none of them is lost.

A worker keeps each status check's next attempt in memory, unacked, until its countdown ends.
On SIGTERM it must hand them back to Redis (not leave them for the visibility timeout, an hour
away) and exit; a new worker then finishes every workflow, each with exactly one outcome.
Both shutdown paths: Celery's cold shutdown with a soft-shutdown limit (the default) and the
plain warm shutdown (`JOBFERRY_SOFT_SHUTDOWN_SECONDS=0`).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis

from scheduler import OutcomeState, WorkflowRequest
from scheduler.celeryconfig import launch_task_id, outcome_task_id
from scheduler.naming import job_name
from tests.integration.conftest import make_kube_pipeline, make_pipeline, print_logs_if_failed
from tests.kube_emulator import KubeEmulator
from tests.services import wait_for

WORKFLOWS = [f"held-{n}" for n in range(5)]


@pytest.mark.parametrize("soft_shutdown", ["5", "0"], ids=["soft-shutdown", "warm-shutdown"])
def test_sigterm_hands_back_held_status_checks(
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    soft_shutdown: str,
) -> None:
    pipeline = make_pipeline(
        redis_url,
        tmp_path / "logs",
        {
            "JOBFERRY_BACKEND": "local",
            "JOBFERRY_LOCAL_STATE_DIR": str(tmp_path / "jobs"),
            # Long enough that every check is still waiting when SIGTERM comes.
            "JOBFERRY_STATUS_INTERVAL_SECONDS": "15",
            "JOBFERRY_STATUS_INTERVAL_MAX_SECONDS": "15",
            "JOBFERRY_SOFT_SHUTDOWN_SECONDS": soft_shutdown,
        },
    )
    try:
        first = pipeline.start_worker()
        for workflow_id in WORKFLOWS:
            pipeline.client.submit(
                WorkflowRequest(
                    workflow_id=workflow_id,
                    image="local",
                    command=["sh", "-c", f"sleep 8; echo done-{workflow_id}"],
                )
            )
        expected = {outcome_task_id(workflow_id) for workflow_id in WORKFLOWS}
        inspect = pipeline.client.celery.control.inspect(timeout=5, limit=1)

        def held() -> bool:
            scheduled = inspect.scheduled() or {}
            ids = {entry["request"]["id"] for entries in scheduled.values() for entry in entries}
            # Launches done and acked: what the worker holds now is the checks alone.
            return ids == expected and redis_client.hlen("unacked") == len(WORKFLOWS)

        wait_for("the worker to hold every status check in countdown", held, timeout=60)

        assert first.process is not None
        os.killpg(first.process.pid, signal.SIGTERM)
        first.process.wait(timeout=90)  # raises, failing the test, if it does not exit
        assert f"Restoring {len(WORKFLOWS)} unacknowledged message(s)" in first.log()
        # Back in the queue, not parked in the unacked hash until the visibility timeout.
        assert redis_client.hlen("unacked") == 0
        assert redis_client.llen("jobferry.status") == len(WORKFLOWS)

        pipeline.start_worker()
        for workflow_id in WORKFLOWS:
            outcome = pipeline.client.wait(workflow_id, timeout=120)
            assert outcome.state is OutcomeState.SUCCEEDED
            assert outcome.log_tail == f"done-{workflow_id}\n"
            result = pipeline.client.celery.AsyncResult(outcome_task_id(workflow_id))
            assert result.get(timeout=30)["state"] == "succeeded"
        logs = pipeline.worker_logs()
        for workflow_id in WORKFLOWS:
            # One outcome each: no check ran twice to the end.
            assert logs.count(f"workflow {workflow_id} finished:") == 1, workflow_id
    finally:
        pipeline.stop()
        print_logs_if_failed(request, pipeline)


def test_sigterm_requeues_a_task_still_running_after_the_soft_limit(
    redis_url: str,
    kube_emulator: KubeEmulator,
    kube_emulator_kubeconfig: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """A launch stuck on a slow API server is cut off after the limit and runs again later."""
    pipeline = make_kube_pipeline(
        redis_url,
        tmp_path / "logs",
        kube_emulator_kubeconfig,
        {"JOBFERRY_API_TIMEOUT_SECONDS": "120", "JOBFERRY_SOFT_SHUTDOWN_SECONDS": "3"},
    )
    stall = 90.0
    kube_emulator.delay_next("POST", r"/jobs$", stall)
    try:
        first = pipeline.start_worker()
        pipeline.client.submit(
            WorkflowRequest(workflow_id="slow-create", image="busybox:1.36", command=["true"])
        )
        inspect = pipeline.client.celery.control.inspect(timeout=5, limit=1)

        def launching() -> bool:
            active = inspect.active() or {}
            ids = {task["id"] for tasks in active.values() for task in tasks}
            return launch_task_id("slow-create") in ids

        wait_for("the launch to hang on the stalled create", launching, timeout=60)
        assert first.process is not None
        started = time.monotonic()
        os.killpg(first.process.pid, signal.SIGTERM)
        first.process.wait(timeout=stall)
        # It did not wait for the stalled request to end.
        assert time.monotonic() - started < stall - 30
        assert "Initiating Soft Shutdown, terminating in 3.0 seconds" in first.log()

        pipeline.start_worker()
        name = job_name("slow-create")
        wait_for("the launch to run again", lambda: kube_emulator.get_job("default", name), 60)
        kube_emulator.mark_job_succeeded("default", name)
        outcome = pipeline.client.wait("slow-create", timeout=120)
        assert outcome.state is OutcomeState.SUCCEEDED
    finally:
        pipeline.stop()
        print_logs_if_failed(request, pipeline)
