"""All of jobferry's settings, read once from `JOBFERRY_*` environment variables.

Producers, workers and the CLI build one `Settings` at their entry point and pass it down;
nothing below reads the environment itself. Each field's docstring gives its unit and default,
and the README's configuration table is checked against this class by a test.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from difflib import get_close_matches
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from scheduler import validation
from scheduler.errors import RequestError

ENV_PREFIX = "JOBFERRY_"


class Settings(BaseSettings):
    """jobferry's configuration. Every field is `JOBFERRY_<FIELD NAME>` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, use_attribute_docstrings=True
    )

    redis_url: str = "redis://localhost:6379/0"
    """Redis for the broker, the workflow records and (unless set apart) the results."""

    result_backend_url: str | None = None
    """Celery result backend; default: `redis_url`."""

    backend: Literal["kubernetes", "local"] = "kubernetes"
    """Where Jobs run. `local` runs commands as subprocesses on the worker's host."""

    app_label: str = "jobferry"
    """Value of the `app` label on every Job (`kubectl get jobs -l app=jobferry`)."""

    kubeconfig: Path | None = None
    """Kubeconfig file; default: in-cluster config, then `KUBECONFIG`, then ~/.kube/config."""

    kube_context: str | None = None
    """Context to use from the kubeconfig; default: its current context."""

    api_timeout_seconds: float = Field(default=15.0, gt=0)
    """Timeout of one Kubernetes API request, seconds."""

    api_retry_limit: int = Field(default=6, ge=0)
    """Retries of a launch after 429/5xx/timeouts before the workflow fails."""

    api_retry_base_seconds: float = Field(default=1.0, gt=0)
    """First retry delay after a temporary API error; doubles each time, with jitter."""

    api_retry_max_seconds: float = Field(default=60.0, gt=0)
    """Cap of the retry delay after temporary API errors, seconds."""

    status_interval_seconds: float = Field(default=2.0, gt=0)
    """Delay from a launch to its first status check, and the first between checks, seconds."""

    status_interval_max_seconds: float = Field(default=30.0, gt=0)
    """Cap of the delay between status checks, seconds (grows by 1.5x per check)."""

    startup_grace_seconds: float = Field(default=60.0, ge=0)
    """How long a pod may sit in ImagePullBackOff or CreateContainerConfigError, seconds."""

    delete_propagation: Literal["Background", "Foreground"] = "Background"
    """Propagation policy when jobferry deletes a Job (deadline, cancel, fast failure)."""

    log_tail_lines: int = Field(default=100, ge=0, le=10_000)
    """Lines of container log kept in the outcome."""

    log_tail_bytes: int = Field(default=64 * 1024, ge=0)
    """Byte cap of the log tail kept in the outcome."""

    outcome_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    """How long finished workflow records and outcomes are kept, seconds (7 days)."""

    visibility_timeout_seconds: int = Field(default=3600, ge=60)
    """Redis redelivers a message not acked within this time; same value for broker and results."""

    launch_queue: str = "jobferry.launch"
    """Queue of launch and cancel tasks."""

    status_queue: str = "jobferry.status"
    """Queue of status-check tasks, apart so waiting checks never starve launches."""

    local_state_dir: Path = Path("/tmp/jobferry-local")
    """Where the `local` backend keeps each Job's state and log."""

    schedules_file: Path | None = None
    """YAML file of periodic workflows that `jobferry beat` submits; default: none."""

    beat_lock_timeout_seconds: int = Field(default=60, ge=5)
    """Beat's Redis lock lapses unless renewed within this; a standby beat takes over, seconds."""

    soft_shutdown_seconds: float = Field(default=20.0, ge=0)
    """On SIGTERM a worker lets running tasks finish this long, then requeues them; 0: no limit."""

    metrics_port: int = Field(default=9808, ge=0, le=65535)
    """Port of the worker's Prometheus `/metrics` endpoint (all interfaces); 0 disables it."""

    task_events: bool = False
    """Celery task events from the start (`-E`), and producers' `task-sent`; off: as Flower asks."""

    log_format: Literal["text", "json"] = "text"
    """Worker log lines: `text`, or `json` (one object a line, with workflow_id and trace_id)."""

    api_qps: float = Field(default=20.0, ge=0)
    """Kubernetes API requests per second, shared by all workers through Redis; 0: no limit."""

    api_burst: int = Field(default=40, ge=1)
    """Capacity of the shared API token bucket: requests that may go out at once."""

    api_budget_max_wait_seconds: float = Field(default=30.0, ge=0)
    """Longest wait for the API budget before a call is retried as `ClientThrottled`, seconds."""

    watch_namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Namespaces the watcher watches (`a,b`); default: those with a workflow in flight."""

    watch_stale_seconds: float = Field(default=15.0, gt=0)
    """Status checks trust the watcher's cache while its heartbeat is younger than this, seconds."""

    watch_lease_seconds: float = Field(default=15.0, gt=0)
    """A namespace's watch lease; a dead watcher's namespaces move to another after it, seconds."""

    watch_check_interval_seconds: float = Field(default=300.0, gt=0)
    """Seconds between status checks while the watcher's cache is fresh, less up to 20 % jitter."""

    reconcile_interval_seconds: float = Field(default=60.0, gt=0)
    """How often beat runs the reconciler (`jobferry.reconcile`), seconds."""

    reconcile_silence_seconds: float = Field(default=600.0, gt=0)
    """A workflow whose status check was silent this long gets its check sent again, seconds."""

    reconcile_delete_orphans: bool = False
    """Delete Jobs labelled as jobferry's that have no workflow record (else only report them)."""

    @field_validator("app_label")
    @classmethod
    def _app_label(cls, value: str) -> str:
        return validation.check_dns1123_label(value, "JOBFERRY_APP_LABEL")

    @field_validator("watch_namespaces", mode="before")
    @classmethod
    def _namespaces(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            for name in value:
                validation.check_dns1123_label(str(name), "JOBFERRY_WATCH_NAMESPACES")
        return value

    @field_validator("redis_url", "result_backend_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"{redact_url(value)!r} is not a Redis URL; use redis://host:6379/0 "
                "or rediss://host:6380/0 for TLS"
            )
        return value

    @model_validator(mode="after")
    def _intervals(self) -> Settings:
        if self.status_interval_max_seconds < self.status_interval_seconds:
            raise ValueError(
                "JOBFERRY_STATUS_INTERVAL_MAX_SECONDS must be >= JOBFERRY_STATUS_INTERVAL_SECONDS"
            )
        if self.status_interval_max_seconds * 4 > self.visibility_timeout_seconds:
            raise ValueError(
                "JOBFERRY_VISIBILITY_TIMEOUT_SECONDS must be at least 4x the longest status "
                "interval, or Redis redelivers status checks that are only waiting"
            )
        if self.watch_check_interval_seconds * 4 > self.visibility_timeout_seconds:
            raise ValueError(
                "JOBFERRY_VISIBILITY_TIMEOUT_SECONDS must be at least 4x "
                "JOBFERRY_WATCH_CHECK_INTERVAL_SECONDS, or Redis redelivers waiting status checks"
            )
        longest = max(self.status_interval_max_seconds, self.watch_check_interval_seconds)
        if self.reconcile_silence_seconds < 2 * longest:
            raise ValueError(
                "JOBFERRY_RECONCILE_SILENCE_SECONDS must be at least twice the longest status "
                f"interval ({longest} s), or the reconciler resends checks that are only waiting"
            )
        return self

    @property
    def results_url(self) -> str:
        return self.result_backend_url or self.redis_url


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build settings from the environment, turning validation errors into a `RequestError`.

    Raises:
        RequestError: naming each bad or unknown `JOBFERRY_*` variable and what it must be.
    """
    environ = os.environ if environ is None else environ
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    unknown = sorted(n for n in environ if n.startswith(ENV_PREFIX) and n not in known)
    if unknown:
        # A misspelt variable silently ignored is a setting the operator thinks is in force.
        hints = [
            f"  {name}: not a jobferry setting"
            + (
                f"; did you mean {close[0]}?"
                if (close := get_close_matches(name, known, 1))
                else ""
            )
            for name in unknown
        ]
        raise RequestError("\n".join(["invalid jobferry settings:", *hints]))
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise RequestError(describe_settings_error(exc)) from None


def describe_settings_error(exc: ValidationError) -> str:
    lines = ["invalid jobferry settings:"]
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        name = f"{ENV_PREFIX}{field.upper()}" if field else "settings"
        lines.append(f"  {name}: {error['msg']}")
    return "\n".join(lines)


def describe_request_error(exc: ValidationError) -> str:
    """One line per problem, naming the field: what a CLI user needs to fix the request."""
    lines = ["invalid workflow request:"]
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "request"
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"  {field}: {message}")
    return "\n".join(lines)


def reference_table() -> str:
    """The README's configuration table, made from the fields' docstrings."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "unset" if default is None else f"`{default}`"
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)


def redact_url(url: str) -> str:
    """The URL with any password replaced by '***', safe to log or show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
