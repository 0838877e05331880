"""Read a Job and its pods, as the API server returns them, into a `JobStatus`.

Pure functions over API-shaped JSON (camelCase, RFC 3339 times), so every case can be
unit-tested from real-shaped payloads. The Job's conditions decide whether it has ended; the
pods supply the evidence: exit code, OOMKilled, and waiting reasons such as ImagePullBackOff
that the Job itself never reports.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict

from workers.backends.base import JobPhase, JobStatus


class Condition(TypedDict, total=False):
    type: str
    status: str
    reason: str
    message: str
    lastTransitionTime: str


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def job_status(job: dict[str, Any], pods: list[dict[str, Any]]) -> JobStatus:
    """Classify a Job (and its pods, newest last or in any order) into a `JobStatus`."""
    status: dict[str, Any] = job.get("status") or {}
    pods = sorted(pods, key=lambda pod: pod.get("metadata", {}).get("creationTimestamp") or "")
    latest = pods[-1] if pods else None
    terminated = _last_terminated(pods)
    counted = int(status.get("failed", 0)) + int(status.get("succeeded", 0))
    attempts = max(len(pods), counted + int(status.get("active", 0)))
    common: dict[str, Any] = {
        "attempts": attempts,
        "created_at": parse_time(job.get("metadata", {}).get("creationTimestamp")),
        "started_at": parse_time(status.get("startTime")),
        "pod_name": _name(terminated[0]) if terminated else _name(latest),
        "exit_code": terminated[1].get("exitCode") if terminated else None,
    }
    final = _final_condition(status)
    if final is not None:
        return _finished(final, status, terminated, common)
    waiting = _waiting(latest)
    phase = JobPhase.RUNNING if _any_running(pods) else JobPhase.PENDING
    if waiting is None:
        return JobStatus(phase=phase, **common)
    reason, message, since = waiting
    return JobStatus(
        phase=phase,
        reason=reason,
        message=message,
        waiting_reason=reason,
        waiting_message=message,
        waiting_since=since,
        **common,
    )


def _finished(
    condition: Condition,
    status: dict[str, Any],
    terminated: tuple[dict[str, Any], dict[str, Any]] | None,
    common: dict[str, Any],
) -> JobStatus:
    finished_at = parse_time(status.get("completionTime")) or parse_time(
        condition.get("lastTransitionTime")
    )
    if condition["type"] == "Complete":
        return JobStatus(
            phase=JobPhase.SUCCEEDED,
            reason="Completed",
            message="the Job completed",
            finished_at=finished_at,
            **common,
        )
    reason = condition.get("reason") or "Failed"
    message = condition.get("message") or "the Job failed"
    container_reason = terminated[1].get("reason") if terminated else None
    if container_reason == "OOMKilled":
        # The Job says BackoffLimitExceeded; the cause a user can act on is the memory limit.
        message = f"the container was OOMKilled (exit 137), then: {message}"
        reason = "OOMKilled"
    return JobStatus(
        phase=JobPhase.FAILED, reason=reason, message=message, finished_at=finished_at, **common
    )


def _final_condition(status: dict[str, Any]) -> Condition | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return Condition(**condition)  # type: ignore[typeddict-item]
    return None


def _containers(pod: dict[str, Any] | None) -> list[dict[str, Any]]:
    if pod is None:
        return []
    return list((pod.get("status") or {}).get("containerStatuses") or [])


def _last_terminated(
    pods: list[dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The newest pod with a terminated container, and that container's terminated state."""
    for pod in reversed(pods):
        for container in _containers(pod):
            state = (container.get("state") or {}).get("terminated")
            if state:
                return pod, state
    return None


def _waiting(pod: dict[str, Any] | None) -> tuple[str, str, datetime | None] | None:
    for container in _containers(pod):
        waiting = (container.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
            assert pod is not None
            since = parse_time(pod.get("status", {}).get("startTime")) or parse_time(
                pod.get("metadata", {}).get("creationTimestamp")
            )
            return str(waiting["reason"]), str(waiting.get("message") or ""), since
    return None


def _any_running(pods: list[dict[str, Any]]) -> bool:
    return any((pod.get("status") or {}).get("phase") == "Running" for pod in pods)


def _name(pod: dict[str, Any] | None) -> str | None:
    return None if pod is None else pod.get("metadata", {}).get("name")
