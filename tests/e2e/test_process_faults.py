"""Faults with real processes against the real control plane: nothing is lost, nothing doubled.

Each test runs its own redis-server (AOF) and `jobferry worker` processes, breaks one of
them (kill -9 of a worker, a Redis crash, kube-apiserver stopped for 30 s) while workflows are
in flight, and then checks every workflow: exactly one Job in the cluster, one outcome, and
that outcome is the right one. Timings are generous: the machine may be loaded.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler import OutcomeState, WorkflowRequest, WorkflowState
from scheduler.celeryconfig import outcome_task_id
from tests.e2e.conftest import E2E, NAMESPACE
from tests.integration.conftest import Pipeline, make_pipeline, print_logs_if_failed
from tests.k8senv.behaviours import BEHAVIOUR_LABEL, DURATION_ANNOTATION
from tests.k8senv.controlplane import ControlPlane
from tests.services import CliProcess, RedisServer, missing, wait_for

# Each test waits out a visibility timeout or an outage on top of its workflows: more than
# the suite's default 300 s on a loaded machine.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# Redis hands a dead worker's unacked messages (a launch in progress, status checks waiting
# on their countdown) to another worker once they are this old. 60 s is the settings'
# minimum. kombu looks for such messages about every 100 s (unacked_restore_interval 10 s x
# unacked_restore_throttle 10), so a recovery takes 60-200 s.
VISIBILITY_TIMEOUT = "60"


@pytest.fixture
def redis_aof(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, fsyncing its AOF on every write."""
    server = RedisServer(tmp_path / "redis", appendfsync="always")
    server.workdir.mkdir()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pipeline(
    redis_aof: RedisServer, e2e: E2E, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Pipeline]:
    """Producer and worker settings for the fault tests; each test starts its own workers."""
    pipeline = make_pipeline(
        redis_aof.url,
        tmp_path / "logs",
        {
            "JOBFERRY_BACKEND": "kubernetes",
            "JOBFERRY_VISIBILITY_TIMEOUT_SECONDS": VISIBILITY_TIMEOUT,
            # Countdowns must stay under a quarter of the visibility timeout.
            "JOBFERRY_WATCH_CHECK_INTERVAL_SECONDS": "15",
            # Launch retries must outlast a 30 s API server outage: 2, 4, 8, 15, 15... s
            # (full jitter) over 12 tries.
            "JOBFERRY_API_RETRY_LIMIT": "12",
            "JOBFERRY_API_RETRY_BASE_SECONDS": "2",
            "JOBFERRY_API_RETRY_MAX_SECONDS": "15",
        },
    )
    pipeline.env["KUBECONFIG"] = str(e2e.worker_kubeconfig)
    yield pipeline
    pipeline.stop()
    print_logs_if_failed(request, pipeline)


def workflow(workflow_id: str, duration: str) -> WorkflowRequest:
    return WorkflowRequest(
        workflow_id=workflow_id,
        image="ghcr.io/acme/report:1.4.2",
        command=["python", "-m", "report"],
        namespace=NAMESPACE,
        labels={BEHAVIOUR_LABEL: "succeed"},
        annotations={DURATION_ANNOTATION: duration},
        # Kept long, so the Jobs are still there to be counted at the end.
        ttl_seconds_after_finished=3600,
    )


def submit_all(pipeline: Pipeline, prefix: str, count: int, duration: str) -> list[str]:
    return [
        pipeline.client.submit(workflow(f"{prefix}-{i:02d}", duration)).workflow_id
        for i in range(count)
    ]


def states(pipeline: Pipeline, ids: list[str]) -> dict[str, WorkflowState]:
    return {workflow_id: pipeline.client.status(workflow_id).state for workflow_id in ids}


def all_finished(pipeline: Pipeline, ids: list[str]) -> bool:
    return all(state is WorkflowState.FINISHED for state in states(pipeline, ids).values())


def assert_each_succeeded_once(pipeline: Pipeline, e2e: E2E, ids: list[str]) -> None:
    """Every workflow: one outcome (record and Celery result agree), succeeded, one Job."""
    for workflow_id in ids:
        outcome = pipeline.client.outcome(workflow_id)
        assert outcome is not None, workflow_id
        assert (outcome.state, outcome.reason) == (OutcomeState.SUCCEEDED, "Completed"), (
            f"{workflow_id}: {outcome.state.value} ({outcome.reason}): {outcome.message}"
        )
        result = pipeline.client.celery.AsyncResult(outcome_task_id(workflow_id))
        assert result.get(timeout=30) == outcome.model_dump(mode="json"), workflow_id
        jobs = e2e.batch.list_namespaced_job(NAMESPACE, label_selector=f"workflow-id={workflow_id}")
        assert len(jobs.items) == 1, f"{workflow_id}: {[j.metadata.name for j in jobs.items]}"


def test_worker_killed_during_launch(pipeline: Pipeline, e2e: E2E) -> None:
    ids = submit_all(pipeline, "fault-launch", 30, "2s")
    first = pipeline.start_worker(concurrency=2)
    # Kill -9 the whole worker (main process and pool) as soon as it is creating Jobs.
    wait_for(
        "the first Job created",
        lambda: any(s is not WorkflowState.QUEUED for s in states(pipeline, ids).values()),
        timeout=120,
        interval=0.02,
    )
    first.stop(signal.SIGKILL)
    at_kill = states(pipeline, ids)
    unlaunched = [
        i for i, s in at_kill.items() if s in (WorkflowState.QUEUED, WorkflowState.LAUNCHING)
    ]
    assert unlaunched, f"the kill came after every launch: {at_kill}"
    pipeline.start_worker(concurrency=4)
    # The killed worker's unacked messages come back after the visibility timeout.
    wait_for(
        "every workflow finished", lambda: all_finished(pipeline, ids), timeout=600, interval=1
    )
    assert_each_succeeded_once(pipeline, e2e, ids)


@contextlib.contextmanager
def reconciling_beat(pipeline: Pipeline, tmp_path: Path) -> Iterator[CliProcess]:
    """`jobferry beat` running the reconciler, with intervals short enough for a test.

    Some faults lose a status check for good: a launch acked at a kill -9 whose chained check
    was never published, or a check whose retry could not be published while Redis was down.
    The reconciler resends the checks of a workflow that went silent.
    """
    pipeline.env.update(
        JOBFERRY_STATUS_INTERVAL_MAX_SECONDS="10",
        JOBFERRY_WATCH_CHECK_INTERVAL_SECONDS="10",
        JOBFERRY_RECONCILE_INTERVAL_SECONDS="5",
        JOBFERRY_RECONCILE_SILENCE_SECONDS="30",
    )
    beat = CliProcess(["beat"], pipeline.env, tmp_path / "logs" / "beat.log").start()
    try:
        yield beat
    finally:
        beat.stop()


def test_worker_killed_during_status_checks(pipeline: Pipeline, e2e: E2E, tmp_path: Path) -> None:
    with reconciling_beat(pipeline, tmp_path):
        ids = submit_all(pipeline, "fault-check", 8, "20s")
        first = pipeline.start_worker(concurrency=2)
        wait_for(
            "every Job created and its status checks waiting",
            lambda: all(s is WorkflowState.RUNNING for s in states(pipeline, ids).values()),
            timeout=120,
            interval=0.2,
        )
        first.stop(signal.SIGKILL)
        pipeline.start_worker(concurrency=4)
        wait_for(
            "every workflow finished", lambda: all_finished(pipeline, ids), timeout=600, interval=1
        )
        assert_each_succeeded_once(pipeline, e2e, ids)


def test_redis_crash_and_restart_with_aof_loses_no_request(
    pipeline: Pipeline, redis_aof: RedisServer, e2e: E2E, tmp_path: Path
) -> None:
    with reconciling_beat(pipeline, tmp_path):
        workers = [pipeline.start_worker(concurrency=4)]
        early = submit_all(pipeline, "fault-redis-a", 10, "10s")
        wait_for(
            "some Jobs running",
            lambda: any(s is WorkflowState.RUNNING for s in states(pipeline, early).values()),
            timeout=120,
        )
        late = submit_all(pipeline, "fault-redis-b", 10, "5s")
        # kill -9: no shutdown save; what Redis acknowledged is in the AOF (appendfsync always).
        redis_aof.restart(signal.SIGKILL)
        ids = early + late

        def finished_under_a_supervisor() -> bool:
            # As Kubernetes or compose do, a worker that exited is started again: kombu 5.7 can
            # end one on a lost connection ("Unrecoverable error: AttributeError: 'NoneType'
            # object has no attribute 'hostname'", from restore_unacked while the channel
            # closes). Nothing may be lost either way.
            process = workers[-1].process
            if process is not None and process.poll() is not None:
                workers.append(pipeline.start_worker(concurrency=4))
            return all_finished(pipeline, ids)

        wait_for("every workflow finished", finished_under_a_supervisor, timeout=600, interval=1)
        assert_each_succeeded_once(pipeline, e2e, ids)


def test_api_server_down_for_30_s(pipeline: Pipeline, e2e: E2E) -> None:
    plane = e2e.cluster
    if not isinstance(plane, ControlPlane):
        missing("stopping kube-apiserver needs tests/k8senv's own control plane")
    assert isinstance(plane, ControlPlane)
    worker = pipeline.start_worker(concurrency=4)
    running = submit_all(pipeline, "fault-api-a", 6, "10s")
    wait_for(
        "the Jobs running",
        lambda: all(s is WorkflowState.RUNNING for s in states(pipeline, running).values()),
        timeout=120,
    )
    plane.stop_apiserver()
    try:
        # Submitted while the API server is away: their launches must retry, not fail.
        during = submit_all(pipeline, "fault-api-b", 4, "3s")
        time.sleep(30)
    finally:
        plane.start_apiserver()
    ids = running + during
    wait_for(
        "every workflow finished", lambda: all_finished(pipeline, ids), timeout=600, interval=1
    )
    assert_each_succeeded_once(pipeline, e2e, ids)
    log = worker.log()
    assert "failed (ApiUnavailable), retry in" in log, "no launch went through the retry path"
    assert "unavailable (ApiUnavailable)" in log, "no status check saw the outage"
