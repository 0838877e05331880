"""submit -> Redis -> real Celery workers -> real kube-apiserver and controllers -> outcome.

Each test asserts on the outcome AND on the cluster. KWOK plays the kubelet: the label
`jobferry.test/behaviour` on the pod template (set through the request's labels) picks what
the container does; see tests/k8senv/README.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from scheduler import Jobferry, OutcomeState, Settings, WorkflowOutcome, WorkflowRequest
from scheduler.celeryconfig import LAUNCH_TASK
from scheduler.naming import job_name
from tests.e2e.conftest import (
    E2E,
    NAMESPACE,
    STRICT_NAMESPACE,
    WORKER_ACCOUNT,
    WORKER_NAMESPACE,
    grant,
)
from tests.integration.conftest import Pipeline, print_logs_if_failed
from tests.k8senv.behaviours import BEHAVIOUR_LABEL
from tests.services import missing, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _worker_logs_on_failure(
    request: pytest.FixtureRequest, k8s_pipeline: Pipeline
) -> Iterator[None]:
    yield
    print_logs_if_failed(request, k8s_pipeline)


def workflow(
    workflow_id: str,
    behaviour: str | None = None,
    *,
    annotations: dict[str, str] | None = None,
    **fields: Any,
) -> WorkflowRequest:
    labels = {BEHAVIOUR_LABEL: behaviour} if behaviour else {}
    return WorkflowRequest(
        workflow_id=workflow_id,
        image="ghcr.io/acme/report:1.4.2",
        command=["python", "-m", "report"],
        namespace=fields.pop("namespace", NAMESPACE),
        labels=labels,
        annotations=annotations or {},
        **fields,
    )


def run(pipeline: Pipeline, request: WorkflowRequest, timeout: float = 90) -> WorkflowOutcome:
    return pipeline.client.submit(request).wait(timeout=timeout)


def job(e2e: E2E, workflow_id: str) -> dict[str, Any] | None:
    try:
        response = e2e.batch.read_namespaced_job(
            job_name(workflow_id), NAMESPACE, _preload_content=False
        )
    # Gone (deleted, or removed by its TTL).
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    data: dict[str, Any] = json.loads(response.data)
    return data


def pods(e2e: E2E, workflow_id: str) -> list[dict[str, Any]]:
    response = e2e.core.list_namespaced_pod(
        NAMESPACE, label_selector=f"workflow-id={workflow_id}", _preload_content=False
    )
    return list(json.loads(response.data)["items"])


def condition(job_obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for item in job_obj.get("status", {}).get("conditions") or []:
        if item["type"] == kind and item["status"] == "True":
            return dict(item)
    return None


def test_success_with_timings_and_log_tail(k8s_pipeline: Pipeline, e2e: E2E) -> None:
    outcome = run(
        k8s_pipeline,
        workflow(
            "e2e-ok",
            "succeed",
            cpu_request="100m",
            memory_limit="128Mi",
            annotations={
                "jobferry.test/duration": "2s",
                "jobferry.test/log": "loading\nreport written to s3://acme/r.pdf\n",
            },
        ),
    )
    assert outcome.state is OutcomeState.SUCCEEDED, outcome
    assert (outcome.reason, outcome.exit_code, outcome.attempts) == ("Completed", 0, 1)
    assert "report written to s3://acme/r.pdf" in outcome.log_tail
    assert outcome.submitted_at and outcome.created_at and outcome.started_at
    assert outcome.finished_at is not None
    # creationTimestamp has one-second resolution: compare at that resolution.
    assert outcome.submitted_at.replace(microsecond=0) <= outcome.created_at
    assert outcome.duration_seconds is not None and outcome.duration_seconds >= 2
    cluster_job = job(e2e, "e2e-ok")
    assert cluster_job is not None and condition(cluster_job, "Complete")
    assert cluster_job["metadata"]["labels"]["app"] == "jobferry"
    assert cluster_job["spec"]["ttlSecondsAfterFinished"] == 3600


def test_failing_container_is_retried_by_the_job_controller(
    k8s_pipeline: Pipeline, e2e: E2E
) -> None:
    outcome = run(
        k8s_pipeline,
        workflow(
            "e2e-fail",
            "fail",
            backoff_limit=1,
            annotations={"jobferry.test/exit-code": "4", "jobferry.test/duration": "1s"},
        ),
        timeout=120,
    )
    assert (outcome.state, outcome.reason) == (OutcomeState.FAILED, "BackoffLimitExceeded")
    assert outcome.exit_code == 4
    assert outcome.attempts == 2
    cluster_job = job(e2e, "e2e-fail")
    assert cluster_job is not None
    assert cluster_job["status"]["failed"] == 2
    assert condition(cluster_job, "Failed")["reason"] == "BackoffLimitExceeded"  # type: ignore[index]
    assert len(pods(e2e, "e2e-fail")) == 2


def test_active_deadline_exceeded(k8s_pipeline: Pipeline, e2e: E2E) -> None:
    outcome = run(
        k8s_pipeline, workflow("e2e-active-deadline", "run-forever", active_deadline_seconds=3)
    )
    assert (outcome.state, outcome.reason) == (OutcomeState.FAILED, "DeadlineExceeded")
    assert "active_deadline_seconds=3" in outcome.message
    cluster_job = job(e2e, "e2e-active-deadline")
    assert cluster_job is not None
    assert condition(cluster_job, "Failed")["reason"] == "DeadlineExceeded"  # type: ignore[index]


def test_workflow_deadline_deletes_the_job_and_leaves_no_pod(
    k8s_pipeline: Pipeline, e2e: E2E
) -> None:
    outcome = run(k8s_pipeline, workflow("e2e-deadline", "run-forever", deadline_seconds=6))
    assert (outcome.state, outcome.reason) == (OutcomeState.DEADLINE_EXCEEDED, "DeadlineExceeded")
    assert job(e2e, "e2e-deadline") is None
    wait_for("no pod left", lambda: pods(e2e, "e2e-deadline") == [], timeout=30)


def test_image_pull_backoff_ends_within_its_grace(k8s_pipeline: Pipeline, e2e: E2E) -> None:
    started = time.monotonic()
    outcome = run(k8s_pipeline, workflow("e2e-pull", "imagepull"))
    assert (outcome.state, outcome.reason) == (OutcomeState.FAILED, "ImagePullBackOff")
    # Grace 3 s (JOBFERRY_STARTUP_GRACE_SECONDS) against a 24 h deadline: generous slack for
    # a loaded CI machine still proves it did not wait for the deadline.
    assert time.monotonic() - started < 3 + 30
    assert "image_pull_secrets" in outcome.message
    assert job(e2e, "e2e-pull") is None
    wait_for("no pod left", lambda: pods(e2e, "e2e-pull") == [], timeout=30)


def test_oom_killed_is_the_reason(k8s_pipeline: Pipeline, e2e: E2E) -> None:
    outcome = run(
        k8s_pipeline,
        workflow(
            "e2e-oom",
            "oom",
            backoff_limit=0,
            memory_limit="64Mi",
            annotations={"jobferry.test/duration": "1s"},
        ),
    )
    assert (outcome.state, outcome.reason, outcome.exit_code) == (
        OutcomeState.FAILED,
        "OOMKilled",
        137,
    )
    assert "memory_limit=64Mi" in outcome.message


def test_ttl_cleanup_keeps_the_log_tail_in_the_outcome(k8s_pipeline: Pipeline, e2e: E2E) -> None:
    outcome = run(
        k8s_pipeline,
        workflow(
            "e2e-ttl",
            "succeed",
            ttl_seconds_after_finished=2,
            annotations={"jobferry.test/log": "evidence that must survive\n"},
        ),
    )
    assert outcome.state is OutcomeState.SUCCEEDED
    wait_for("TTL cleanup of the Job", lambda: job(e2e, "e2e-ttl") is None, timeout=60)
    again = k8s_pipeline.client.outcome("e2e-ttl")
    assert again is not None and "evidence that must survive" in again.log_tail


def test_cancel_removes_the_job_and_its_pods(k8s_pipeline: Pipeline, e2e: E2E) -> None:
    handle = k8s_pipeline.client.submit(workflow("e2e-cancel", "run-forever"))
    wait_for("the pod running", lambda: "running" in handle.status().detail, timeout=60)
    handle.cancel()
    outcome = handle.wait(timeout=60)
    assert (outcome.state, outcome.reason) == (OutcomeState.CANCELLED, "Cancelled")
    assert job(e2e, "e2e-cancel") is None
    wait_for("no pod left", lambda: pods(e2e, "e2e-cancel") == [], timeout=30)


def test_missing_namespace_with_the_shipped_role_is_forbidden(
    k8s_pipeline: Pipeline, e2e: E2E
) -> None:
    # A namespaced Role grants nothing elsewhere, and RBAC answers before existence.
    outcome = run(k8s_pipeline, workflow("e2e-no-ns", namespace="no-such-namespace"))
    assert (outcome.state, outcome.reason) == (OutcomeState.REJECTED, "Forbidden")
    assert 'in the namespace "no-such-namespace"' in outcome.message
    assert "check that namespace 'no-such-namespace' exists" in outcome.message


def test_missing_namespace_is_rejected_with_the_servers_message(
    k8s_pipeline: Pipeline, e2e: E2E
) -> None:
    # A worker allowed to create Jobs everywhere (the admin here) reaches the existence check.
    with side_worker(k8s_pipeline, e2e.cluster.kubeconfig, "admin") as producer:
        outcome = producer.submit(workflow("e2e-no-ns-admin", namespace="no-such-namespace"))
        result = outcome.wait(timeout=60)
    assert (result.state, result.reason) == (OutcomeState.REJECTED, "NamespaceNotFound")
    assert 'namespaces "no-such-namespace" not found' in result.message


@contextmanager
def side_worker(pipeline: Pipeline, kubeconfig: Path, name: str) -> Iterator[Jobferry]:
    """A worker with other credentials, on its own launch queue, and a producer for it."""
    queue = f"jobferry.launch.{name}"
    worker = pipeline.start_worker(
        concurrency=1, KUBECONFIG=str(kubeconfig), JOBFERRY_LAUNCH_QUEUE=queue
    )
    producer = Jobferry(Settings(redis_url=pipeline.client.settings.redis_url, launch_queue=queue))
    try:
        yield producer
    finally:
        producer.close()
        worker.stop()


def test_invalid_from_the_api_server_is_rejected_with_its_message(
    k8s_pipeline: Pipeline, e2e: E2E
) -> None:
    # The cluster's admission policy (tests/e2e/manifests) wants memory limits: 422.
    outcome = run(k8s_pipeline, workflow("e2e-invalid", namespace=STRICT_NAMESPACE))
    assert (outcome.state, outcome.reason) == (OutcomeState.REJECTED, "Invalid")
    assert "ValidatingAdmissionPolicy 'jobs-need-memory-limits'" in outcome.message
    assert "every container of a Job needs a memory limit" in outcome.message
    with_limit = run(
        k8s_pipeline, workflow("e2e-valid", namespace=STRICT_NAMESPACE, memory_limit="256Mi")
    )
    assert with_limit.state is OutcomeState.SUCCEEDED


def test_redelivered_launch_leaves_exactly_one_job(k8s_pipeline: Pipeline, e2e: E2E) -> None:
    handle = k8s_pipeline.client.submit(
        workflow("e2e-twice", "succeed", annotations={"jobferry.test/duration": "10s"})
    )
    wait_for("the Job created", lambda: job(e2e, "e2e-twice"), timeout=60)
    # The same launch message handled a second time, as Redis does after a lost ack. A
    # launch stores no result: its log says it found the Job and adopted it.
    k8s_pipeline.client.celery.send_task(LAUNCH_TASK, args=["e2e-twice"])
    wait_for(
        "the second launch to adopt the Job",
        lambda: "for workflow e2e-twice" in k8s_pipeline.worker_logs(),
        timeout=60,
    )
    assert "adopted existing Job" in k8s_pipeline.worker_logs()
    assert handle.wait(timeout=90).state is OutcomeState.SUCCEEDED
    jobs = e2e.batch.list_namespaced_job(NAMESPACE, label_selector="workflow-id=e2e-twice")
    assert len(jobs.items) == 1


def test_worker_without_create_jobs_gets_an_rbac_hint(k8s_pipeline: Pipeline, e2e: E2E) -> None:
    from tests.e2e.conftest import rbac_documents

    api = e2e.cluster.admin_api_client()
    role = next(doc for doc in rbac_documents() if doc["kind"] == "Role")
    account = "jobferry-no-create"
    kubeconfig = e2e.cluster.sa_kubeconfig(WORKER_NAMESPACE, account)
    grant(api, NAMESPACE, role, account, "jobferry-no-create", drop=("jobs", "create"))
    api.close()
    with side_worker(k8s_pipeline, kubeconfig, "no-create") as producer:
        outcome = producer.submit(workflow("e2e-forbidden")).wait(timeout=60)
    assert (outcome.state, outcome.reason) == (OutcomeState.REJECTED, "Forbidden")
    assert "may not create jobs in namespace 'jobferry-e2e'" in outcome.message
    assert f'User "system:serviceaccount:{WORKER_NAMESPACE}:{account}"' in outcome.message
    assert "kubectl auth can-i create jobs" in outcome.message
    assert job(e2e, "e2e-forbidden") is None


def test_the_role_grants_exactly_what_the_workers_used(k8s_pipeline: Pipeline, e2e: E2E) -> None:
    """Runs last in this module: every call the tests above made as the worker is audited."""
    from tests.e2e.conftest import rbac_documents

    audit_log = e2e.cluster.audit_log
    if audit_log is None:
        missing("the API server's audit log is only available from tests/k8senv's cluster")
    user = f"system:serviceaccount:{WORKER_NAMESPACE}:{WORKER_ACCOUNT}"
    used = set()
    for line in audit_log.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if event["user"]["username"] != user or ref.get("namespace") != NAMESPACE:
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        used.add((ref.get("apiGroup", ""), resource, event["verb"]))
    role = next(doc for doc in rbac_documents() if doc["kind"] == "Role")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert used == granted
