"""The interface every job backend implements, and the errors it may raise.

Backends speak in kubectl verbs (`create`, `get`, `delete`, `logs`) and translate whatever
their platform raises into this small tree, so the tasks decide between "retry later" and
"end the workflow" without knowing which backend they drive::

    BackendError
     ├── PermanentError          retrying cannot help: the workflow ends `rejected`
     │    ├── Forbidden          401/403: the worker's identity lacks a verb (RBAC hint)
     │    ├── NotFound           404 on create: the namespace does not exist
     │    ├── Conflict           409 for a Job that is not this workflow's
     │    └── Invalid            400/422: the API server refused the manifest
     └── TemporaryError          429, 5xx, timeouts, refused connections: retry with backoff
          └── Gone               410 on a watch: its resourceVersion is too old, list again
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from scheduler.models import WorkflowRequest

# Pod waiting reasons that never resolve by themselves: the workflow ends after a grace period
# instead of waiting for its deadline (Kubernetes does not count them against backoffLimit).
UNRECOVERABLE_WAITING = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImageNeverPull",
    }
)


class BackendError(Exception):
    """Base of backend errors. `reason` is machine-readable, the message says what to do."""

    reason = "BackendError"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class PermanentError(BackendError):
    reason = "Rejected"


class Forbidden(PermanentError):
    reason = "Forbidden"


class NotFound(PermanentError):
    reason = "NotFound"


class Conflict(PermanentError):
    reason = "AlreadyExists"


class Invalid(PermanentError):
    reason = "Invalid"


class TemporaryError(BackendError):
    """Try again later; `retry_after` is the server's hint in seconds, when it gave one."""

    reason = "ApiUnavailable"

    def __init__(
        self, message: str, reason: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, reason)
        self.retry_after = retry_after


class Gone(TemporaryError):
    """A watch's resourceVersion was compacted away (410 Gone): list again, then watch."""

    reason = "Expired"


class JobPhase(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    MISSING = "missing"

    @property
    def terminal(self) -> bool:
        return self in (JobPhase.SUCCEEDED, JobPhase.FAILED)


@dataclass(frozen=True)
class JobRef:
    """Which Job a workflow owns. The name is derived from the workflow id."""

    name: str
    namespace: str
    created_at: datetime | None = None
    adopted: bool = False


@dataclass(frozen=True)
class JobStatus:
    """What a backend knows about a Job, reduced to what the outcome needs."""

    phase: JobPhase
    reason: str = ""
    message: str = ""
    exit_code: int | None = None
    attempts: int = 0
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    pod_name: str | None = None
    waiting_reason: str | None = None
    waiting_message: str = ""
    waiting_since: datetime | None = None

    @property
    def stuck(self) -> bool:
        """A pod waits for something that will not come by itself (bad image, bad config)."""
        return self.waiting_reason in UNRECOVERABLE_WAITING


class JobBackend(ABC):
    """Runs a workflow's Job somewhere and reports on it."""

    name: str

    @abstractmethod
    def create(
        self, request: WorkflowRequest, job_name: str, extra_env: dict[str, str] | None = None
    ) -> JobRef:
        """Create the Job, or adopt the one this workflow created before (redelivery).

        `extra_env` adds literal variables to the container (e.g. TRACEPARENT).

        Raises:
            Conflict: a Job of that name exists and belongs to something else.
            PermanentError, TemporaryError: as the module docstring says.
        """

    @abstractmethod
    def get(self, ref: JobRef) -> JobStatus:
        """The Job's status; phase MISSING when it does not exist (any more)."""

    @abstractmethod
    def delete(self, ref: JobRef) -> None:
        """Delete the Job and its pods; deleting a missing Job is not an error."""

    @abstractmethod
    def logs(self, ref: JobRef, status: JobStatus, tail_lines: int, limit_bytes: int) -> str:
        """The tail of the latest attempt's log; "" when there is none to read."""

    def owned_jobs(self, namespace: str, selector: str) -> list[tuple[str, str]]:
        """(Job name, workflow id) of every Job `selector` marks as jobferry's in `namespace`.

        Used by the reconciler to find Jobs without a workflow record; a backend that cannot
        list returns [] (the local backend: its Jobs die with their records' host).
        """
        return []

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
