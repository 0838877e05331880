"""The request a producer submits and the outcome it reads back.

Both cross the queue as JSON, so they are pydantic models: strict on the way in (no silent
coercion of "3" to 3), with field validators that apply the API server's own rules so a bad
request fails in `submit()`, before anything is queued.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scheduler import validation

WORKFLOW_ID_MAX = 63
RESERVED_LABELS = ("app", "workflow-id", "app.kubernetes.io/managed-by")


class WorkflowState(str, Enum):
    """Where a workflow is now, as `jobferry status` shows it."""

    QUEUED = "queued"
    LAUNCHING = "launching"
    RUNNING = "running"
    FINISHED = "finished"


class OutcomeState(str, Enum):
    """How a workflow ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class _KeyRef(BaseModel):
    """A key in a named Secret or ConfigMap."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    what: ClassVar[str]

    name: str
    key: str
    optional: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validation.check_dns1123_subdomain(value, f"{cls.what} name")

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return validation.check_config_key(value, f"{cls.what} key")


class SecretKeyRef(_KeyRef):
    what = "secret"


class ConfigMapKeyRef(_KeyRef):
    what = "config map"


class EnvVar(BaseModel):
    """One environment variable: a literal value, or a reference to a Secret or ConfigMap key.

    Prefer `secret_key_ref` for anything secret: literal values travel through Redis.
    Literal values are never logged, and are scrubbed from outcomes and log tails.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    name: str
    value: str | None = Field(default=None, repr=False)
    secret_key_ref: SecretKeyRef | None = None
    config_map_key_ref: ConfigMapKeyRef | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validation.check_env_var_name(value)

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        sources = [self.value, self.secret_key_ref, self.config_map_key_ref]
        if sum(source is not None for source in sources) != 1:
            raise ValueError(
                f"environment variable {self.name!r} needs exactly one of "
                "'value', 'secret_key_ref' or 'config_map_key_ref'"
            )
        return self


class Toleration(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        return None if value is None else validation.check_qualified_name(value, "toleration key")

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator 'Exists' must not set a value")
        if self.key is None and self.operator != "Exists":
            raise ValueError("a toleration without a key must use operator 'Exists'")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("toleration_seconds is only valid with effect 'NoExecute'")
        return self


Seconds = Annotated[int, Field(gt=0, le=30 * 24 * 3600)]


class WorkflowRequest(BaseModel):
    """Everything needed to run one workflow as a Kubernetes Job.

    Defaults follow the guide jobferry grew from: namespace `default`, backoff limit 3,
    finished Jobs kept for 3600 s.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    workflow_id: str = Field(description="Caller-chosen id, unique per workflow; 1-63 chars.")
    image: str = Field(description="Container image, e.g. ghcr.io/acme/report:1.4.2.")
    command: list[str] = Field(min_length=1, description="The container's entrypoint argv.")
    args: list[str] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    cpu_request: str | None = None
    cpu_limit: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None
    namespace: str = "default"
    backoff_limit: Annotated[int, Field(ge=0, le=100)] = 3
    ttl_seconds_after_finished: Annotated[int, Field(ge=0)] | None = 3600
    active_deadline_seconds: Seconds | None = Field(
        default=None, description="Kubernetes' limit on the Job's running time (all attempts)."
    )
    deadline_seconds: Seconds = Field(
        default=24 * 3600,
        description="The whole workflow's limit from submission; past it the Job is deleted.",
    )
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    service_account: str | None = None
    image_pull_secrets: list[str] = Field(default_factory=list)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)

    @field_validator("workflow_id")
    @classmethod
    def _workflow_id(cls, value: str) -> str:
        if not value:
            raise ValueError("workflow_id must not be empty")
        if len(value) > WORKFLOW_ID_MAX:
            raise ValueError(
                f"workflow_id is {len(value)} characters; at most {WORKFLOW_ID_MAX} are allowed "
                "(it is stored as the Job's 'workflow-id' label)"
            )
        return validation.check_label_value(value, "workflow_id")

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not value or any(ch.isspace() for ch in value):
            raise ValueError(
                f"image {value!r} must be a non-empty image reference without spaces, "
                "e.g. 'ghcr.io/acme/report:1.4.2'"
            )
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str]) -> list[str]:
        if not value[0].strip():
            raise ValueError("command[0] must name the program to run, e.g. ['python', '-m', 'x']")
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return validation.check_dns1123_label(value, "namespace")

    @field_validator("service_account")
    @classmethod
    def _service_account(cls, value: str | None) -> str | None:
        return (
            None if value is None else validation.check_dns1123_subdomain(value, "service account")
        )

    @field_validator("image_pull_secrets")
    @classmethod
    def _pull_secrets(cls, value: list[str]) -> list[str]:
        return [validation.check_dns1123_subdomain(v, "image pull secret") for v in value]

    @field_validator("labels", "node_selector")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            validation.check_qualified_name(key, "label key")
            validation.check_label_value(item, f"label {key!r} value")
        return value

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            validation.check_qualified_name(key, "annotation key")
        if sum(len(k) + len(v) for k, v in value.items()) > 256 * 1024:
            raise ValueError("annotations are larger than Kubernetes' 256 KiB limit")
        return value

    @model_validator(mode="after")
    def _resources_and_labels(self) -> WorkflowRequest:
        for resource in ("cpu", "memory"):
            request = getattr(self, f"{resource}_request")
            limit = getattr(self, f"{resource}_limit")
            parsed_request = _quantity(request, f"{resource}_request")
            parsed_limit = _quantity(limit, f"{resource}_limit")
            if parsed_request is not None and parsed_limit is not None:
                if parsed_request > parsed_limit:
                    raise ValueError(
                        f"{resource}_request {request!r} is above {resource}_limit {limit!r}; "
                        "a request must be less than or equal to its limit"
                    )
        reserved = sorted(set(self.labels) & set(RESERVED_LABELS))
        if reserved:
            raise ValueError(f"labels {reserved} are set by jobferry itself; choose other keys")
        names = [var.name for var in self.env]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"environment variables {duplicates} are given more than once")
        return self

    def digest(self) -> str:
        """A stable fingerprint: equal requests have equal digests."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()

    def secret_values(self) -> list[str]:
        """Literal env values, to scrub from anything jobferry shows or stores."""
        return [var.value for var in self.env if var.value and len(var.value) >= 4]


def _quantity(text: str | None, what: str) -> Decimal | None:
    return None if text is None else validation.parse_quantity(text, what)


class WorkflowOutcome(BaseModel):
    """How a workflow ended, with the evidence: reason, exit code, log tail, timings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workflow_id: str
    state: OutcomeState
    reason: str = Field(description="Machine-readable, e.g. BackoffLimitExceeded or OOMKilled.")
    message: str = Field(description="What happened and what to do about it.")
    job_name: str | None = None
    namespace: str | None = None
    submitted_at: datetime | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    exit_code: int | None = None
    log_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.state is OutcomeState.SUCCEEDED

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class WorkflowStatus(BaseModel):
    """The live record of a workflow, as `jobferry status` shows it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workflow_id: str
    state: WorkflowState
    job_name: str
    namespace: str
    submitted_at: datetime
    updated_at: datetime
    deadline_at: datetime | None = None
    """When the workflow passes its deadline (`deadline_seconds` after it was submitted)."""
    detail: str = ""
    cancel_requested: bool = False
    outcome: WorkflowOutcome | None = None
