"""Faults against the real control plane: real workers, a real `jobferry watcher`, real Redis.

Each test breaks something the way it breaks in production and asserts that the workflow
still gets the right outcome, and that the watcher says what happened.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from scheduler import OutcomeState, WorkflowRequest
from scheduler.naming import job_name
from tests.e2e.conftest import E2E, NAMESPACE, watch_health
from tests.integration.conftest import Pipeline, print_logs_if_failed
from tests.k8senv.behaviours import BEHAVIOUR_LABEL
from tests.services import WatcherProcess, wait_for
from workers import cache

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _logs_on_failure(request: pytest.FixtureRequest, k8s_pipeline: Pipeline) -> Iterator[None]:
    yield
    print_logs_if_failed(request, k8s_pipeline)


def workflow(workflow_id: str, behaviour: str, **annotations: str) -> WorkflowRequest:
    return WorkflowRequest(
        workflow_id=workflow_id,
        image="ghcr.io/acme/report:1.4.2",
        command=["python", "-m", "report"],
        namespace=NAMESPACE,
        labels={BEHAVIOUR_LABEL: behaviour},
        annotations={f"jobferry.test/{k}": v for k, v in annotations.items()},
    )


def test_job_deleted_by_someone_else_fails_as_job_deleted(
    k8s_pipeline: Pipeline, e2e: E2E
) -> None:
    settings = k8s_pipeline.client.settings
    handle = k8s_pipeline.client.submit(workflow("fault-deleted", "run-forever"))
    wait_for("the pod running", lambda: "running" in handle.status().detail, timeout=60)
    e2e.batch.delete_namespaced_job(
        job_name("fault-deleted"), NAMESPACE, propagation_policy="Background"
    )
    # The check loop now waits up to watch_check_interval_seconds (120 s) between looks; the
    # watcher's wake-up brings the outcome within one short interval of the deletion.
    outcome = handle.wait(timeout=settings.watch_check_interval_seconds / 4)
    assert (outcome.state, outcome.reason) == (OutcomeState.FAILED, "JobDeleted")
    assert "deleted by someone else" in outcome.message


def test_watch_410_gone_relists_and_workflows_still_finish(
    k8s_pipeline: Pipeline, e2e: E2E
) -> None:
    watcher = next(p for p in k8s_pipeline.workers if isinstance(p, WatcherProcess))
    watcher.stop()
    client = redis.Redis.from_url(k8s_pipeline.client.settings.redis_url)
    before = cache.read_health(client, NAMESPACE).relists
    # A resourceVersion the API server compacted away long ago: the resumed watch gets 410.
    client.hset(cache.health_key(NAMESPACE), mapping={"jobs_rv": "1", "pods_rv": "1"})
    handle = k8s_pipeline.client.submit(workflow("fault-410", "succeed", duration="3s"))
    k8s_pipeline.start_watcher(JOBFERRY_WATCH_NAMESPACES=NAMESPACE)
    outcome = handle.wait(timeout=90)
    assert outcome.state is OutcomeState.SUCCEEDED
    health = wait_for("a healthy watch", lambda: watch_health(k8s_pipeline, NAMESPACE))
    assert health.relists >= before + 1
    assert "410 Gone" in health.last_error
    assert int(health.jobs_rv) > 1 and int(health.pods_rv) > 1
    # And what a liveness probe sees.
    probe = subprocess.run(
        [sys.executable, "-m", "workers", "watcher", "--health"],
        env={**k8s_pipeline.env, "JOBFERRY_WATCH_NAMESPACES": NAMESPACE},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert f"{NAMESPACE}: ok" in probe.stdout
    # A workflow started after the re-list finishes from the watch as well.
    again = k8s_pipeline.client.submit(workflow("fault-410-after", "succeed", duration="1s"))
    assert again.wait(timeout=90).state is OutcomeState.SUCCEEDED
    client.close()
