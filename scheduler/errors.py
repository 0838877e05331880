"""Errors the producer side raises, before anything is queued.

Every error says what was wrong and what to do about it, so it can be shown to a user as is::

    JobferryError
     ├── RequestError            the request or settings are invalid (fix the input)
     │    └── WorkflowConflictError  the id exists with a different request
     ├── BrokerUnavailableError  Redis cannot be reached (start it or fix JOBFERRY_REDIS_URL)
     ├── WorkflowNotFoundError   no record for that workflow id
     └── WaitTimeoutError        the outcome did not arrive in time (the workflow goes on)
"""

from __future__ import annotations


class JobferryError(Exception):
    """Base class of every error jobferry raises to its callers."""


class RequestError(JobferryError, ValueError):
    """A workflow request or a setting is invalid; nothing was queued."""


class WorkflowConflictError(RequestError):
    """The workflow id is taken by a request that differs from this one."""


class BrokerUnavailableError(JobferryError, ConnectionError):
    """Redis (broker, result backend and workflow records) cannot be reached."""


class WorkflowNotFoundError(JobferryError, LookupError):
    """No workflow with this id was submitted, or its record has expired."""


class WaitTimeoutError(JobferryError, TimeoutError):
    """The workflow did not finish within the caller's timeout; it keeps running."""
