"""jobferry's producer side: describe a workflow, submit it, follow it, read its outcome.

    from scheduler import WorkflowRequest, submit
    handle = submit(WorkflowRequest(workflow_id="report-1", image="busybox:1.36",
                                    command=["echo", "hi"]))
    outcome = handle.wait(timeout=600)

Nothing here imports the worker code or the Kubernetes client.
"""

from scheduler.client import (
    Jobferry,
    WorkflowHandle,
    cancel,
    default_client,
    get_outcome,
    get_status,
    submit,
)
from scheduler.errors import (
    BrokerUnavailableError,
    JobferryError,
    RequestError,
    WaitTimeoutError,
    WorkflowConflictError,
    WorkflowNotFoundError,
)
from scheduler.models import (
    ConfigMapKeyRef,
    EnvVar,
    OutcomeState,
    SecretKeyRef,
    Toleration,
    WorkflowOutcome,
    WorkflowRequest,
    WorkflowState,
    WorkflowStatus,
)
from scheduler.settings import Settings, load_settings

__all__ = [
    "BrokerUnavailableError",
    "ConfigMapKeyRef",
    "EnvVar",
    "Jobferry",
    "JobferryError",
    "OutcomeState",
    "RequestError",
    "SecretKeyRef",
    "Settings",
    "Toleration",
    "WaitTimeoutError",
    "WorkflowConflictError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "WorkflowOutcome",
    "WorkflowRequest",
    "WorkflowState",
    "WorkflowStatus",
    "cancel",
    "default_client",
    "get_outcome",
    "get_status",
    "load_settings",
    "submit",
]
