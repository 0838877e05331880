"""The whole pipeline against the Kubernetes API emulator, with the real `kubernetes` client.

submit -> real Redis -> real worker processes -> HTTP -> emulator -> outcome. The test plays
the Job controller: it moves the Job's and pods' status as the real one would. The real
controllers are exercised by the end-to-end suite (tests/e2e) against a real control plane.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler import OutcomeState, WorkflowRequest, WorkflowState
from scheduler.celeryconfig import LAUNCH_TASK
from scheduler.naming import job_name
from tests.integration.conftest import Pipeline, created_job, make_kube_pipeline, serve, terminated
from tests.kube_emulator import KubeEmulator
from tests.services import wait_for

NS = "default"


def request(workflow_id: str, **fields: Any) -> WorkflowRequest:
    return WorkflowRequest(
        workflow_id=workflow_id,
        image="ghcr.io/acme/report:1.4.2",
        command=["python", "-m", "report"],
        **fields,
    )


def test_success_with_log_tail_and_timings(
    kube_pipeline: Pipeline, kube_emulator: KubeEmulator
) -> None:
    handle = kube_pipeline.client.submit(request("ok", memory_limit="1Gi"))
    job = created_job(kube_emulator, "ok")
    assert job["metadata"]["labels"]["workflow-id"] == "ok"
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "limits": {"memory": "1Gi"}
    }
    pod = kube_emulator.add_pod_for_job(
        NS, job["metadata"]["name"], phase="Succeeded", container_state=terminated(0, "Completed")
    )
    kube_emulator.set_pod_log(NS, pod, "".join(f"line {i}\n" for i in range(300)))
    kube_emulator.mark_job_succeeded(NS, job["metadata"]["name"])
    outcome = handle.wait(timeout=60)
    assert outcome.state is OutcomeState.SUCCEEDED
    assert outcome.exit_code == 0 and outcome.attempts == 1
    assert outcome.log_tail.splitlines() == [f"line {i}" for i in range(200, 300)]
    assert outcome.created_at is not None and outcome.finished_at is not None


def test_failure_reports_attempts_reason_and_exit_code(
    kube_pipeline: Pipeline, kube_emulator: KubeEmulator
) -> None:
    handle = kube_pipeline.client.submit(request("bad", backoff_limit=1))
    name = created_job(kube_emulator, "bad")["metadata"]["name"]
    # Both attempts fail alike: creation times have one-second resolution, so either pod
    # may be taken for the latest one, whose log is read.
    for _ in range(2):
        pod = kube_emulator.add_pod_for_job(
            NS, name, phase="Failed", container_state=terminated(3, "Error")
        )
        kube_emulator.set_pod_log(NS, pod, "Traceback: input.csv missing\n")
    kube_emulator.mark_job_failed(
        NS,
        name,
        reason="BackoffLimitExceeded",
        message="Job has reached the specified backoff limit",
    )
    outcome = handle.wait(timeout=60)
    assert outcome.state is OutcomeState.FAILED
    assert outcome.reason == "BackoffLimitExceeded"
    assert outcome.exit_code == 3 and outcome.attempts == 2
    assert "input.csv missing" in outcome.log_tail
    assert "raise backoff_limit" in outcome.message


def test_oom_killed_is_the_reason(kube_pipeline: Pipeline, kube_emulator: KubeEmulator) -> None:
    handle = kube_pipeline.client.submit(request("oom", backoff_limit=0, memory_limit="64Mi"))
    name = created_job(kube_emulator, "oom")["metadata"]["name"]
    kube_emulator.add_pod_for_job(
        NS, name, phase="Failed", container_state=terminated(137, "OOMKilled")
    )
    kube_emulator.mark_job_failed(NS, name, reason="BackoffLimitExceeded")
    outcome = handle.wait(timeout=60)
    assert (outcome.state, outcome.reason, outcome.exit_code) == (
        OutcomeState.FAILED,
        "OOMKilled",
        137,
    )
    assert "64Mi" in outcome.message


def test_workflow_deadline_deletes_the_job_and_its_pods(
    kube_pipeline: Pipeline, kube_emulator: KubeEmulator
) -> None:
    handle = kube_pipeline.client.submit(request("slow", deadline_seconds=10))
    name = created_job(kube_emulator, "slow")["metadata"]["name"]
    kube_emulator.add_pod_for_job(
        NS,
        name,
        phase="Running",
        container_state={"running": {"startedAt": "2026-12-04T10:00:00Z"}},
    )
    outcome = handle.wait(timeout=60)
    assert outcome.state is OutcomeState.DEADLINE_EXCEEDED
    assert kube_emulator.get_job(NS, name) is None
    # Like the real API server, the emulator orphans a Job's pods unless the delete names a
    # propagation policy: no pod left means the policy was sent.
    assert kube_emulator.list_pods(NS) == []
    assert kube_emulator.count_requests("DELETE") == 1


def test_image_pull_backoff_ends_after_the_grace(
    kube_pipeline: Pipeline, kube_emulator: KubeEmulator
) -> None:
    handle = kube_pipeline.client.submit(request("pull", deadline_seconds=600))
    name = created_job(kube_emulator, "pull")["metadata"]["name"]
    kube_emulator.add_pod_for_job(
        NS,
        name,
        phase="Pending",
        container_state={
            "waiting": {
                "reason": "ImagePullBackOff",
                "message": 'Back-off pulling image "ghcr.io/acme/report:1.4.2"',
            }
        },
    )
    outcome = handle.wait(timeout=60)
    assert (outcome.state, outcome.reason) == (OutcomeState.FAILED, "ImagePullBackOff")
    assert "image_pull_secrets" in outcome.message
    assert kube_emulator.get_job(NS, name) is None


def test_redelivered_launch_adopts_the_job_it_created(
    kube_pipeline: Pipeline, kube_emulator: KubeEmulator
) -> None:
    handle = kube_pipeline.client.submit(request("twice"))
    name = created_job(kube_emulator, "twice")["metadata"]["name"]
    # The same launch message handled a second time, as after a redelivery.
    kube_pipeline.client.celery.send_task(LAUNCH_TASK, args=["twice"])
    wait_for(
        "the second create",
        lambda: kube_emulator.count_requests("POST", r"/jobs$") == 2,
        timeout=30,
    )
    kube_emulator.add_pod_for_job(
        NS, name, phase="Succeeded", container_state=terminated(0, "Completed")
    )
    kube_emulator.mark_job_succeeded(NS, name)
    assert handle.wait(timeout=60).state is OutcomeState.SUCCEEDED
    assert len(kube_emulator.list_jobs(NS)) == 1
    posts = [r.status for r in kube_emulator.requests if r.method == "POST"]
    assert posts == [201, 409]


def test_a_job_left_by_a_lost_delivery_is_adopted(
    kube_pipeline: Pipeline, kube_emulator: KubeEmulator, kube_emulator_kubeconfig: Path
) -> None:
    from workers.backends.manifest import build_job

    # A first delivery created the Job, then its worker died before recording it.
    wf = request("lost")
    _create_directly(kube_emulator_kubeconfig, build_job(wf, job_name("lost"), "jobferry"))
    handle = kube_pipeline.client.submit(wf)
    wait_for("a create", lambda: kube_emulator.count_requests("POST", r"/jobs$") >= 1, timeout=30)
    kube_emulator.mark_job_succeeded(NS, job_name("lost"))
    assert handle.wait(timeout=60).state is OutcomeState.SUCCEEDED
    assert len(kube_emulator.list_jobs(NS)) == 1


def _create_directly(kubeconfig: Path, body: dict[str, Any]) -> None:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(kubeconfig))
    client.BatchV1Api(api).create_namespaced_job(NS, body)
    api.close()


def test_foreign_job_with_our_name_is_never_adopted(
    kube_pipeline: Pipeline, kube_emulator: KubeEmulator, kube_emulator_kubeconfig: Path
) -> None:
    foreign = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name("clash"), "labels": {"team": "other"}},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "x", "image": "busybox"}],
                }
            }
        },
    }
    _create_directly(kube_emulator_kubeconfig, foreign)
    outcome = kube_pipeline.client.submit(request("clash")).wait(timeout=60)
    assert (outcome.state, outcome.reason) == (OutcomeState.REJECTED, "NameConflict")
    assert "does not belong to workflow 'clash'" in outcome.message
    survivor = kube_emulator.get_job(NS, job_name("clash"))
    assert survivor is not None and survivor["metadata"]["labels"] == {"team": "other"}
    assert kube_emulator.count_requests("DELETE") == 0


def test_forbidden_is_rejected_with_an_rbac_hint(
    kube_pipeline: Pipeline, kube_emulator: KubeEmulator
) -> None:
    kube_emulator.forbid("create", "jobs")
    outcome = kube_pipeline.client.submit(request("denied")).wait(timeout=60)
    assert (outcome.state, outcome.reason) == (OutcomeState.REJECTED, "Forbidden")
    assert "may not create jobs in namespace 'default'" in outcome.message
    assert "kubectl auth can-i create jobs -n default" in outcome.message
    assert kube_emulator.list_jobs(NS) == []


def test_invalid_manifest_keeps_the_api_servers_message(
    kube_pipeline: Pipeline, kube_emulator: KubeEmulator
) -> None:
    message = 'Job.batch "x" is invalid: spec.template.spec.containers[0].image: Required value'
    kube_emulator.fail_next("POST", r"/jobs$", 422, reason="Invalid", message=message)
    outcome = kube_pipeline.client.submit(request("invalid")).wait(timeout=60)
    assert (outcome.state, outcome.reason) == (OutcomeState.REJECTED, "Invalid")
    assert message in outcome.message


def test_missing_namespace_is_rejected(
    kube_pipeline: Pipeline, kube_emulator: KubeEmulator
) -> None:
    outcome = kube_pipeline.client.submit(request("lost-ns", namespace="nowhere")).wait(60)
    assert (outcome.state, outcome.reason) == (OutcomeState.REJECTED, "NamespaceNotFound")
    assert "namespace 'nowhere' does not exist" in outcome.message


def test_server_errors_are_retried_then_the_job_is_created(
    kube_pipeline: Pipeline, kube_emulator: KubeEmulator
) -> None:
    kube_emulator.fail_next("POST", r"/jobs$", 503, times=2, message="etcdserver: leader changed")
    kube_emulator.fail_next("GET", r"/jobs/", 500, times=2)
    handle = kube_pipeline.client.submit(request("flaky"))
    name = created_job(kube_emulator, "flaky")["metadata"]["name"]
    kube_emulator.mark_job_succeeded(NS, name)
    assert handle.wait(timeout=60).state is OutcomeState.SUCCEEDED
    posts = [r.status for r in kube_emulator.requests if r.method == "POST"]
    assert posts == [503, 503, 201]
    assert kube_emulator.count_requests("GET", r"/jobs/") >= 3


def test_cancel_deletes_the_job_and_its_pods(
    kube_pipeline: Pipeline, kube_emulator: KubeEmulator
) -> None:
    handle = kube_pipeline.client.submit(request("stop-me"))
    name = created_job(kube_emulator, "stop-me")["metadata"]["name"]
    pod = kube_emulator.add_pod_for_job(NS, name, phase="Running", container_state={"running": {}})
    kube_emulator.set_pod_log(NS, pod, "working...\n")
    wait_for("the pod running", lambda: "running" in handle.status().detail, timeout=30)
    handle.cancel()
    outcome = handle.wait(timeout=30)
    assert outcome.state is OutcomeState.CANCELLED
    assert outcome.log_tail == "working...\n"
    assert kube_emulator.get_job(NS, name) is None
    assert kube_emulator.list_pods(NS) == []


def test_job_deleted_by_someone_else(
    kube_pipeline: Pipeline, kube_emulator: KubeEmulator, kube_emulator_kubeconfig: Path
) -> None:
    handle = kube_pipeline.client.submit(request("vanish"))
    name = created_job(kube_emulator, "vanish")["metadata"]["name"]
    wait_for("state running", lambda: handle.status().state.value == "running", timeout=30)
    _delete_directly(kube_emulator_kubeconfig, name)
    outcome = handle.wait(timeout=30)
    assert (outcome.state, outcome.reason) == (OutcomeState.FAILED, "JobDeleted")


def _delete_directly(kubeconfig: Path, name: str) -> None:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(kubeconfig))
    client.BatchV1Api(api).delete_namespaced_job(name, NS, propagation_policy="Background")
    api.close()


def test_secrets_never_reach_the_outcome(
    kube_pipeline: Pipeline, kube_emulator: KubeEmulator
) -> None:
    wf = request("secretive", env=[{"name": "API_TOKEN", "value": "tok-9f8e7d6c5b"}])
    handle = kube_pipeline.client.submit(wf)
    name = created_job(kube_emulator, "secretive")["metadata"]["name"]
    pod = kube_emulator.add_pod_for_job(
        NS, name, phase="Failed", container_state=terminated(1, "Error")
    )
    kube_emulator.set_pod_log(NS, pod, "auth failed for token tok-9f8e7d6c5b\n")
    kube_emulator.mark_job_failed(NS, name, reason="BackoffLimitExceeded")
    outcome = handle.wait(timeout=60)
    assert "tok-9f8e7d6c5b" not in outcome.model_dump_json()
    assert "auth failed for token [redacted]" in outcome.log_tail
    assert not re.search("tok-9f8e7d6c5b", kube_pipeline.worker_logs())


def test_a_failing_delete_at_the_deadline_is_retried(
    kube_pipeline: Pipeline, kube_emulator: KubeEmulator
) -> None:
    kube_emulator.fail_next("DELETE", r"/jobs/", 503, times=2)
    handle = kube_pipeline.client.submit(request("slow-delete", deadline_seconds=8))
    name = created_job(kube_emulator, "slow-delete")["metadata"]["name"]
    outcome = handle.wait(timeout=60)
    assert outcome.state is OutcomeState.DEADLINE_EXCEEDED
    assert kube_emulator.get_job(NS, name) is None
    deletes = [r.status for r in kube_emulator.requests if r.method == "DELETE"]
    assert deletes == [503, 503, 200]


def test_a_forbidden_delete_is_said_in_the_outcome(
    kube_pipeline: Pipeline, kube_emulator: KubeEmulator
) -> None:
    kube_emulator.forbid("delete", "jobs")
    handle = kube_pipeline.client.submit(request("undeletable", deadline_seconds=8))
    name = created_job(kube_emulator, "undeletable")["metadata"]["name"]
    outcome = handle.wait(timeout=60)
    assert outcome.state is OutcomeState.DEADLINE_EXCEEDED
    assert "the Job could NOT be deleted (Forbidden)" in outcome.message
    assert "may not delete jobs" in outcome.message
    assert kube_emulator.get_job(NS, name) is not None


@pytest.fixture
def slow_checks(
    redis_url: str,
    kube_emulator_kubeconfig: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Pipeline]:
    """`kube_pipeline` with the seed's 5 s poll interval instead of the tests' 0.3 s."""
    pipeline = make_kube_pipeline(
        redis_url,
        tmp_path / "logs",
        kube_emulator_kubeconfig,
        {
            "JOBFERRY_STATUS_INTERVAL_SECONDS": "5",
            "JOBFERRY_STATUS_INTERVAL_MAX_SECONDS": "5",
        },
    )
    yield from serve(pipeline, request)


def test_the_first_look_waits_one_status_interval(
    slow_checks: Pipeline, kube_emulator: KubeEmulator
) -> None:
    # A Job created milliseconds ago has nothing to show: looking at once cost a task and a
    # GET per workflow in the middle of a burst of launches. Without the watcher's cache the
    # chained check waits `status_interval_seconds` after the launch, as the seed's
    # WaitForCompletion waits one poll interval.
    handle = slow_checks.client.submit(request("patient"))
    name = created_job(kube_emulator, "patient")["metadata"]["name"]
    wait_for("the launch to end", lambda: handle.status().state is WorkflowState.RUNNING)
    time.sleep(2)
    assert kube_emulator.count_requests("GET", rf"/jobs/{name}$") == 0
    kube_emulator.mark_job_succeeded(NS, name)
    assert handle.wait(timeout=30).state is OutcomeState.SUCCEEDED
    assert kube_emulator.count_requests("GET", rf"/jobs/{name}$") >= 1
