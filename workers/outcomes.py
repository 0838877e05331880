"""Turn what a backend saw into a `WorkflowOutcome` whose message says what to do.

Also the one place that scrubs literal env values out of everything an outcome carries.
"""

from __future__ import annotations

from datetime import UTC, datetime

from scheduler.models import OutcomeState, WorkflowOutcome, WorkflowRequest, WorkflowStatus
from workers.backends.base import JobPhase, JobStatus

REDACTED = "[redacted]"


def scrub(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def live_detail(status: JobStatus) -> str:
    """What a running workflow's record says about its Job (`jobferry status`)."""
    if status.waiting_reason:
        return f"pod waiting: {status.waiting_reason}"
    if status.phase is JobPhase.RUNNING:
        return f"pod running (attempt {max(status.attempts, 1)})"
    return "Job created, waiting for its pod"


def advice(status: JobStatus, request: WorkflowRequest) -> str:
    """A message for a Job that ended or was stopped for what its pods did."""
    reason = status.reason
    code = "" if status.exit_code is None else f" (last exit code {status.exit_code})"
    if status.phase is JobPhase.SUCCEEDED:
        return f"the Job completed after {status.attempts} attempt(s)"
    if reason == "OOMKilled":
        return (
            f"the container ran out of memory (OOMKilled, exit 137) with memory_limit="
            f"{request.memory_limit or 'unset'}; raise memory_limit or reduce the work's memory"
        )
    if reason == "BackoffLimitExceeded":
        return (
            f"the container failed {status.attempts} time(s){code}, reaching backoff_limit="
            f"{request.backoff_limit}; read log_tail, fix the workload or raise backoff_limit"
        )
    if reason == "DeadlineExceeded":
        return (
            f"the Job ran longer than active_deadline_seconds={request.active_deadline_seconds} "
            "and Kubernetes stopped it; raise active_deadline_seconds or make the work faster"
        )
    if reason in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"):
        return (
            f"image {request.image!r} could not be pulled ({reason}: {status.waiting_message}); "
            "check the image name and tag, and image_pull_secrets for a private registry. "
            "The Job was deleted"
        )
    if reason in ("CreateContainerConfigError", "CreateContainerError"):
        return (
            f"the container could not be created ({reason}: {status.waiting_message}); check "
            "that every referenced Secret, ConfigMap and key exists. The Job was deleted"
        )
    return f"the Job failed ({reason}){code}: {status.message}"


def build(
    record: WorkflowStatus,
    state: OutcomeState,
    reason: str,
    message: str,
    status: JobStatus | None = None,
    log_tail: str = "",
    secrets: list[str] | None = None,
) -> WorkflowOutcome:
    status = status or JobStatus(phase=JobPhase.MISSING)
    secrets = secrets or []
    return WorkflowOutcome(
        workflow_id=record.workflow_id,
        state=state,
        reason=reason,
        message=scrub(message, secrets),
        job_name=record.job_name,
        namespace=record.namespace,
        submitted_at=record.submitted_at,
        created_at=status.created_at,
        started_at=status.started_at,
        finished_at=status.finished_at or datetime.now(UTC),
        attempts=status.attempts,
        exit_code=status.exit_code,
        log_tail=scrub(log_tail, secrets),
    )
