"""The reconciler, run as the `jobferry.reconcile` task in a real worker.

A status check loop that is lost (its worker killed and its unacked message gone) leaves a
workflow in flight forever; the reconciler notices the silence and starts a new loop. A Job
labelled as ours without a workflow record is reported, and deleted when told to.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kubernetes import client, config

from scheduler import OutcomeState, WorkflowOutcome, WorkflowRequest, WorkflowState
from scheduler.celeryconfig import RECONCILE_TASK
from tests.integration.conftest import (
    Pipeline,
    make_kube_pipeline,
    make_pipeline,
    print_logs_if_failed,
)
from tests.kube_emulator import KubeEmulator
from tests.services import wait_for

QUICK = {
    "JOBFERRY_WATCH_CHECK_INTERVAL_SECONDS": "1",
    "JOBFERRY_RECONCILE_SILENCE_SECONDS": "3",
}


def reconcile(pipeline: Pipeline) -> dict[str, Any]:
    result = pipeline.client.celery.send_task(RECONCILE_TASK).get(timeout=60)
    assert isinstance(result, dict)
    return result


def resent_and_finished(pipeline: Pipeline, request: WorkflowRequest) -> WorkflowOutcome:
    """Run the reconciler until it resends `request`'s workflow, then wait for the outcome."""
    wait_for(
        "the reconciler to send the launch and the check",
        lambda: request.workflow_id in reconcile(pipeline)["resent"],
        timeout=60,
        interval=1,
    )
    return pipeline.client.submit(request).wait(timeout=60)


@pytest.fixture
def local(redis_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Pipeline]:
    pipeline = make_pipeline(
        redis_url,
        tmp_path / "logs",
        {
            "JOBFERRY_BACKEND": "local",
            "JOBFERRY_LOCAL_STATE_DIR": str(tmp_path / "jobs"),
            **QUICK,
        },
    )
    yield pipeline
    pipeline.stop()
    print_logs_if_failed(request, pipeline)


def test_a_lost_status_check_is_sent_again(local: Pipeline, redis_client: redis.Redis) -> None:
    worker = local.start_worker()
    handle = local.client.submit(
        WorkflowRequest(
            workflow_id="lost-check",
            image="local",
            command=["sh", "-c", "sleep 4; echo finished"],
        )
    )
    wait_for("the Job running", lambda: handle.status().state is WorkflowState.RUNNING)
    # The worker dies holding the check's countdown message, and the message is lost with it
    # (as when Redis drops it or it expires): nothing will ever check this workflow again.
    worker.stop(signal.SIGKILL)
    redis_client.delete("unacked", "unacked_index", "jobferry.status")
    local.start_worker()
    wait_for(
        "the reconciler to resend the check",
        lambda: "lost-check" in reconcile(local)["resent"],
        timeout=60,
        interval=1,
    )
    outcome = handle.wait(timeout=60)
    assert outcome.state is OutcomeState.SUCCEEDED
    assert "finished" in outcome.log_tail
    # Finished: nothing more to resend.
    assert reconcile(local)["resent"] == []


def test_a_workflow_whose_launch_was_never_queued_is_launched(local: Pipeline) -> None:
    # A producer (or beat) killed between writing the record and queueing the launch leaves
    # a `queued` record with no message behind it.
    local.start_worker()
    request = WorkflowRequest(workflow_id="never-sent", image="local", command=["echo", "late"])
    assert local.client.records.create(request) is None
    outcome = resent_and_finished(local, request)
    assert outcome.state is OutcomeState.SUCCEEDED
    assert "late" in outcome.log_tail


def test_a_launch_that_died_half_way_is_launched_again(local: Pipeline) -> None:
    # Redis failed under a running launch: the record says `launching`, the launch task ended
    # on the connection error (no retry, no chained check), and nothing else will come.
    local.start_worker()
    request = WorkflowRequest(workflow_id="cut-off", image="local", command=["echo", "again"])
    records = local.client.records
    assert records.create(request) is None
    assert records.set_state("cut-off", WorkflowState.LAUNCHING, "creating Job")
    outcome = resent_and_finished(local, request)
    assert outcome.state is OutcomeState.SUCCEEDED
    assert "again" in outcome.log_tail
    assert "still launching; sending its launch again" in local.worker_logs()


def test_at_most_one_resend_per_silence_period(local: Pipeline) -> None:
    # No worker takes the checks: the record alone says when a check last ran.
    records = local.client.records
    records.create(WorkflowRequest(workflow_id="quiet", image="local", command=["true"]))
    now = float(records.redis.hget(records.key("quiet"), "last_checked") or 0)
    assert records.claim_resend("quiet", 3, now=now + 1) == 0
    assert records.claim_resend("quiet", 3, now=now + 4) == 1
    assert records.claim_resend("quiet", 3, now=now + 5) == 0  # a second reconciler
    assert records.claim_resend("quiet", 3, now=now + 8) == 2
    # The replaced loop (epoch 1) stops at its next run; the new one (epoch 2) goes on.
    assert records.mark_checked("quiet", 1, now=now + 9) == 0
    assert records.mark_checked("quiet", 2, now=now + 9) == 1


@pytest.fixture
def kube(
    redis_url: str,
    kube_emulator: KubeEmulator,
    kube_emulator_kubeconfig: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Pipeline]:
    pipeline = make_kube_pipeline(
        redis_url,
        tmp_path / "logs",
        kube_emulator_kubeconfig,
        {"JOBFERRY_RECONCILE_DELETE_ORPHANS": "true", **QUICK},
    )
    pipeline.start_worker()
    yield pipeline
    pipeline.stop()
    print_logs_if_failed(request, pipeline)


def test_a_job_of_ours_without_a_record_is_reported_and_deleted(
    kube: Pipeline, kube_emulator: KubeEmulator, kube_emulator_kubeconfig: Path
) -> None:
    # A workflow in `default` makes it a namespace jobferry looks at.
    ok = kube.client.submit(WorkflowRequest(workflow_id="kept", image="i", command=["x"]))
    wait_for("the Job", lambda: kube_emulator.list_jobs("default", {"workflow-id": "kept"}))
    api = config.new_client_from_config(str(kube_emulator_kubeconfig))
    labels = {"app": "jobferry", "app.kubernetes.io/managed-by": "jobferry", "workflow-id": "x"}
    foreign = {"app": "other", "workflow-id": "y"}
    for name, job_labels in (("ghost", labels), ("not-ours", foreign)):
        client.BatchV1Api(api).create_namespaced_job(
            "default",
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": name, "labels": job_labels},
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "c", "image": "busybox"}],
                        }
                    }
                },
            },
        )
    api.close()
    report = reconcile(kube)
    assert report["orphans"] == ["default/ghost"]
    assert report["deleted"] == ["default/ghost"]
    assert kube_emulator.get_job("default", "ghost") is None
    assert kube_emulator.get_job("default", "not-ours") is not None
    assert ok.status().outcome is None  # the workflow's own Job is left alone
    assert kube_emulator.list_jobs("default", {"workflow-id": "kept"})
