"""Faults against the real control plane: real workers, a real `jobferry watcher`, real Redis.

Each test breaks something the way it breaks in production and asserts that the workflow
still gets the right outcome, and that the watcher says what happened.
"""

from __future__ import annotations

import subprocess
import sys
import time
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


def test_job_deleted_by_someone_else_fails_as_job_deleted(k8s_pipeline: Pipeline, e2e: E2E) -> None:
    settings = k8s_pipeline.client.settings
    handle = k8s_pipeline.client.submit(workflow("fault-deleted", "run-forever"))
    wait_for("the pod running", lambda: "running" in handle.status().detail, timeout=60)
    e2e.batch.delete_namespaced_job(
        job_name("fault-deleted"), NAMESPACE, propagation_policy="Background"
    )
    # The check loop now waits up to watch_check_interval_seconds (300 s) between looks; the
    # watcher's wake-up brings the outcome within one short interval of the deletion.
    outcome = handle.wait(timeout=settings.watch_check_interval_seconds / 4)
    assert (outcome.state, outcome.reason) == (OutcomeState.FAILED, "JobDeleted")
    assert "deleted by someone else" in outcome.message


def test_watch_410_gone_relists_and_workflows_still_finish(
    k8s_pipeline: Pipeline, e2e: E2E
) -> None:
    """The watcher is down while the API server forgets the versions it stored (~90 s)."""
    watcher = next(p for p in k8s_pipeline.workers if isinstance(p, WatcherProcess))
    watcher.stop()
    client = redis.Redis.from_url(k8s_pipeline.client.settings.redis_url)
    stored = cache.read_health(client, NAMESPACE)
    handle = k8s_pipeline.client.submit(workflow("fault-410", "succeed", duration="3s"))
    forget_versions_before(e2e, stored.jobs_rv)
    k8s_pipeline.start_watcher(JOBFERRY_WATCH_NAMESPACES=NAMESPACE)
    assert handle.wait(timeout=90).state is OutcomeState.SUCCEEDED
    health = wait_for("a healthy watch", lambda: watch_health(k8s_pipeline, NAMESPACE))
    assert health.relists >= stored.relists + 1
    assert "410 Gone" in health.last_error and "too old resource version" in health.last_error
    assert int(health.jobs_rv) > int(stored.jobs_rv)
    # What a liveness probe sees.
    probe = subprocess.run(
        [sys.executable, "-m", "workers", "watcher", "--health"],
        env={**k8s_pipeline.env, "JOBFERRY_WATCH_NAMESPACES": NAMESPACE},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert f"{NAMESPACE}: ok" in probe.stdout
    # A workflow started after the re-list finishes from the new watch as well.
    again = k8s_pipeline.client.submit(workflow("fault-410-after", "succeed", duration="1s"))
    assert again.wait(timeout=90).state is OutcomeState.SUCCEEDED
    client.close()


def forget_versions_before(e2e: E2E, resource_version: str) -> None:
    """Make kube-apiserver's watch cache drop every Job event up to `resource_version`.

    The cache keeps the events of the last 75 s and grows while they are fresher than that;
    past 75 s, new events push the old ones out. So wait, then churn a scratch Job's labels
    until a watch from that version gets 410 Expired, as the watcher's will.
    """
    time.sleep(80)
    name, namespace = "jobferry-410-churn", "default"
    e2e.batch.create_namespaced_job(
        namespace,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {
                "suspend": True,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "busybox"}],
                    }
                },
            },
        },
    )
    try:
        for i in range(5000):
            e2e.batch.patch_namespaced_job(name, namespace, {"metadata": {"labels": {"n": str(i)}}})
            if i % 25 == 24 and _expired(e2e, resource_version):
                return
        pytest.fail(f"the API server still serves Job events from {resource_version}")
    finally:
        e2e.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")


def _expired(e2e: E2E, resource_version: str) -> bool:
    response = e2e.batch.list_namespaced_job(
        NAMESPACE,
        watch=True,
        resource_version=resource_version,
        timeout_seconds=1,
        _preload_content=False,
    )
    try:
        first = next(response.stream(), b"")
    finally:
        response.release_conn()
    return b'"code":410' in first
