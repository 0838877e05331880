"""Status classification from Job and Pod JSON shaped as kube-apiserver 1.36 returns them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from workers.backends.base import JobPhase
from workers.backends.classify import job_status


def job(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "jobferry-report-1-0a1b2c3d",
            "namespace": "default",
            "uid": "8a3c5e1e-7f0b-4c55-9d1e-2f5d3c9a1b7e",
            "creationTimestamp": "2026-12-04T10:00:00Z",
            "labels": {"app": "jobferry", "workflow-id": "report-1"},
        },
        "spec": {"backoffLimit": 3},
        "status": status,
    }


def pod(
    name: str,
    phase: str,
    state: dict[str, Any],
    created: str = "2026-12-04T10:00:01Z",
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "default",
            "creationTimestamp": created,
            "labels": {"job-name": "jobferry-report-1-0a1b2c3d"},
        },
        "status": {
            "phase": phase,
            "startTime": created,
            "containerStatuses": [
                {
                    "name": "workflow",
                    "image": "ghcr.io/acme/report:1.4.2",
                    "ready": False,
                    "restartCount": 0,
                    "state": state,
                }
            ],
        },
    }


def terminated(code: int, reason: str, finished: str = "2026-12-04T10:01:00Z") -> dict[str, Any]:
    return {
        "terminated": {
            "exitCode": code,
            "reason": reason,
            "startedAt": "2026-12-04T10:00:02Z",
            "finishedAt": finished,
        }
    }


COMPLETE = {
    "conditions": [
        {
            "type": "SuccessCriteriaMet",
            "status": "True",
            "reason": "CompletionsReached",
            "lastTransitionTime": "2026-12-04T10:01:00Z",
        },
        {
            "type": "Complete",
            "status": "True",
            "reason": "CompletionsReached",
            "message": "Reached expected number of succeeded pods",
            "lastTransitionTime": "2026-12-04T10:01:01Z",
        },
    ],
    "startTime": "2026-12-04T10:00:00Z",
    "completionTime": "2026-12-04T10:01:01Z",
    "succeeded": 1,
    "ready": 0,
    "terminating": 0,
}


def failed(reason: str, message: str, failed_pods: int) -> dict[str, Any]:
    return {
        "conditions": [
            {
                "type": "FailureTarget",
                "status": "True",
                "reason": reason,
                "message": message,
                "lastTransitionTime": "2026-12-04T10:05:00Z",
            },
            {
                "type": "Failed",
                "status": "True",
                "reason": reason,
                "message": message,
                "lastTransitionTime": "2026-12-04T10:05:01Z",
            },
        ],
        "startTime": "2026-12-04T10:00:00Z",
        "failed": failed_pods,
        "ready": 0,
        "terminating": 0,
    }


def test_complete_job_succeeds_with_timings_and_exit_code() -> None:
    status = job_status(job(COMPLETE), [pod("p1", "Succeeded", terminated(0, "Completed"))])
    assert status.phase is JobPhase.SUCCEEDED
    assert status.exit_code == 0
    assert status.attempts == 1
    assert status.started_at == datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    assert status.finished_at == datetime(2026, 12, 4, 10, 1, 1, tzinfo=UTC)
    assert status.pod_name == "p1"


def test_backoff_limit_exceeded_reports_attempts_and_last_exit_code() -> None:
    pods = [
        pod(f"p{i}", "Failed", terminated(i + 1, "Error"), created=f"2026-12-04T10:0{i}:00Z")
        for i in range(4)
    ]
    status = job_status(
        job(failed("BackoffLimitExceeded", "Job has reached the specified backoff limit", 4)),
        list(reversed(pods)),
    )
    assert status.phase is JobPhase.FAILED
    assert status.reason == "BackoffLimitExceeded"
    assert status.attempts == 4
    assert status.exit_code == 4
    assert status.pod_name == "p3"
    assert status.finished_at == datetime(2026, 12, 4, 10, 5, 1, tzinfo=UTC)


def test_oom_killed_is_the_reason_not_the_backoff_limit() -> None:
    status = job_status(
        job(failed("BackoffLimitExceeded", "Job has reached the specified backoff limit", 1)),
        [pod("p1", "Failed", terminated(137, "OOMKilled"))],
    )
    assert status.phase is JobPhase.FAILED
    assert status.reason == "OOMKilled"
    assert status.exit_code == 137
    assert "BackoffLimitExceeded" not in status.reason
    assert "backoff limit" in status.message


def test_active_deadline_exceeded() -> None:
    status = job_status(
        job(failed("DeadlineExceeded", "Job was active longer than specified deadline", 1)),
        [pod("p1", "Failed", terminated(137, "Error"))],
    )
    assert status.phase is JobPhase.FAILED
    assert status.reason == "DeadlineExceeded"


def test_image_pull_backoff_is_pending_and_stuck() -> None:
    waiting = {
        "waiting": {
            "reason": "ImagePullBackOff",
            "message": 'Back-off pulling image "ghcr.io/acme/nope:1"',
        }
    }
    status = job_status(
        job({"startTime": "2026-12-04T10:00:00Z", "active": 1, "ready": 0}),
        [pod("p1", "Pending", waiting)],
    )
    assert status.phase is JobPhase.PENDING
    assert status.stuck
    assert status.waiting_reason == "ImagePullBackOff"
    assert "Back-off pulling image" in status.waiting_message
    assert status.waiting_since == datetime(2026, 12, 4, 10, 0, 1, tzinfo=UTC)


def test_container_creating_is_pending_but_not_stuck() -> None:
    status = job_status(
        job({"active": 1, "ready": 0}),
        [pod("p1", "Pending", {"waiting": {"reason": "ContainerCreating"}})],
    )
    assert status.phase is JobPhase.PENDING
    assert not status.stuck
    assert status.waiting_reason is None


def test_create_container_config_error_is_stuck() -> None:
    status = job_status(
        job({"active": 1, "ready": 0}),
        [
            pod(
                "p1",
                "Pending",
                {
                    "waiting": {
                        "reason": "CreateContainerConfigError",
                        "message": 'secret "report" not found',
                    }
                },
            )
        ],
    )
    assert status.stuck and status.waiting_reason == "CreateContainerConfigError"


def test_running_pod_is_running() -> None:
    status = job_status(
        job({"startTime": "2026-12-04T10:00:00Z", "active": 1, "ready": 1}),
        [pod("p1", "Running", {"running": {"startedAt": "2026-12-04T10:00:02Z"}})],
    )
    assert status.phase is JobPhase.RUNNING
    assert status.exit_code is None
    assert status.attempts == 1


def test_retry_in_progress_keeps_the_last_exit_code_and_counts_attempts() -> None:
    status = job_status(
        job({"startTime": "2026-12-04T10:00:00Z", "active": 1, "failed": 1, "ready": 1}),
        [
            pod("p1", "Failed", terminated(2, "Error"), created="2026-12-04T10:00:01Z"),
            pod("p2", "Running", {"running": {}}, created="2026-12-04T10:00:20Z"),
        ],
    )
    assert status.phase is JobPhase.RUNNING
    assert status.attempts == 2
    assert status.exit_code == 2


def test_new_job_without_pods_is_pending() -> None:
    status = job_status(job({}), [])
    assert status.phase is JobPhase.PENDING
    assert status.attempts == 0
    assert status.created_at == datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


def test_failure_target_alone_is_not_final_yet() -> None:
    interim = failed("BackoffLimitExceeded", "x", 1)
    interim["conditions"] = interim["conditions"][:1]
    assert not job_status(job(interim), []).phase.terminal
