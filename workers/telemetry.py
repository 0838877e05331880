"""What operators see of the workers: spans, Prometheus metrics, and the context both need.

Tracing. Each worker process (a prefork child) installs its own `TracerProvider` in
`worker_process_init` (scheduler/tracing.py; exporters hold threads that must not cross a
fork), and the Celery instrumentor turns every task into a `run/<task>` span whose parent
comes from the message headers. The shape of a workflow's trace is chosen here::

    jobferry.submit                          (producer; its context is stored in the record)
     ├── apply_async/jobferry.launch
     │    └── run/jobferry.launch             TRACEPARENT handed to the Job's container
     │         ├── k8s create jobs
     │         └── apply_async/jobferry.check
     │              └── run/jobferry.check    first status check
     ├── apply_async/jobferry.check           each later check: a sibling under the root,
     │    └── run/jobferry.check              not a child of the check before it
     │         ├── k8s get jobs
     │         └── jobferry.outcome          state, reason; ERROR status unless it succeeded
     └── ...

A retry is published inside the running task's span, so left alone a hundred checks would nest
a hundred levels deep; `under_workflow_trace` publishes it under the workflow's root instead.
Every Kubernetes API call is a `k8s <verb> <resource>` span with the workflow's attributes.

Metrics. Under the prefork pool each child counts into files in `PROMETHEUS_MULTIPROC_DIR`
(set by `jobferry worker` before anything imports prometheus_client), and the worker's main
process serves their sum on `/metrics`. The in-flight gauge is read from Redis at scrape time,
so it is right across every worker and restart.

Nothing here records an env value: attributes are ids, names and the image; error messages
are scrubbed of the request's literal env values before they reach a span.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from scheduler.models import OutcomeState, WorkflowOutcome, WorkflowRequest, WorkflowStatus
from scheduler.records import RecordStore
from scheduler.tracing import (
    K8S_NAMESPACE,
    configure_tracing,
    context_from,
    current_carrier,
    instrument_celery,
    tracer,
    workflow_attributes,
)
from workers.outcomes import scrub

log = logging.getLogger("jobferry")

# Outcomes that mean something went wrong: their spans get an ERROR status.
ERROR_STATES = frozenset(
    {OutcomeState.FAILED, OutcomeState.REJECTED, OutcomeState.DEADLINE_EXCEEDED}
)

WORKFLOWS_SUBMITTED = Counter(
    "jobferry_workflows_submitted",
    "Workflows a launch worker picked up for the first time.",
)
WORKFLOWS_LAUNCHED = Counter(
    "jobferry_workflows_launched",
    "Workflows whose Job was created (or adopted) and is now running.",
)
WORKFLOWS_FINISHED = Counter(
    "jobferry_workflows_finished",
    "Workflows that ended, by outcome state and reason (counted once, by the finisher).",
    ["state", "reason"],
)
JOB_RUN_SECONDS = Histogram(
    "jobferry_job_run_seconds",
    "From the Job's start to its end, for workflows that ended after their Job started.",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400),
)
JOB_TIME_TO_RUNNING_SECONDS = Histogram(
    "jobferry_job_time_to_running_seconds",
    "From the Job's creation to its start (scheduling, image pull), observed at the end.",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
)
KUBE_API_REQUESTS = Counter(
    "jobferry_kube_api_requests",
    "Kubernetes API requests by verb, resource and HTTP status code ('error': no answer).",
    ["verb", "resource", "code"],
)
KUBE_API_SECONDS = Histogram(
    "jobferry_kube_api_request_seconds",
    "Duration of Kubernetes API requests, by verb and resource.",
    ["verb", "resource"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15),
)
STATUS_CHECK_LAG_SECONDS = Histogram(
    "jobferry_status_check_lag_seconds",
    "How late a status check ran after its planned time (its countdown's ETA).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)


@dataclass(frozen=True)
class _Workflow:
    attributes: dict[str, str]
    secrets: list[str] = field(default_factory=list)
    carrier: dict[str, str] = field(default_factory=dict)
    """The workflow's trace context as its record holds it."""


# The workflow the running task works on: Kubernetes API spans take its attributes.
_current: ContextVar[_Workflow | None] = ContextVar("jobferry_workflow", default=None)


def start_worker_process() -> None:
    """In each worker process: install tracing (always, so ids exist) and trace the tasks."""
    configure_tracing("jobferry-worker", os.environ, without_exporter=True)
    instrument_celery()


def stop_worker_process() -> None:
    """Flush the spans still buffered, and retire this process's metric files."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def enter_workflow(
    record: WorkflowStatus, request: WorkflowRequest, carrier: Mapping[str, str]
) -> None:
    """Tag the running task's span with the workflow, and remember it for API call spans and
    for a retry (`carrier`: the trace context its record holds)."""
    attributes = workflow_attributes(
        record.workflow_id, record.namespace, request.image, record.job_name
    )
    trace.get_current_span().set_attributes(attributes)
    _current.set(_Workflow(attributes, request.secret_values(), dict(carrier)))


def workflow_carrier() -> dict[str, str] | None:
    """The trace context of the workflow the running task entered; None when it entered none."""
    workflow = _current.get()
    return None if workflow is None else workflow.carrier


def leave_workflow() -> None:
    _current.set(None)


@dataclass
class ApiCall:
    """Filled in by the caller: the HTTP status the API server answered, if it answered."""

    code: int | None = None


@contextmanager
def kube_api_call(verb: str, resource: str, namespace: str) -> Iterator[ApiCall]:
    """A span and the request metrics around one Kubernetes API call."""
    workflow = _current.get() or _Workflow({})
    attributes = {
        **workflow.attributes,
        K8S_NAMESPACE: namespace,
        "k8s.api.verb": verb,
        "k8s.api.resource": resource,
    }
    call = ApiCall()
    started = time.monotonic()
    with tracer.start_as_current_span(
        f"k8s {verb} {resource}",
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield call
        except Exception as exc:
            record_error(span, exc, workflow.secrets)
            raise
        finally:
            if call.code is not None:
                span.set_attribute("http.response.status_code", call.code)
            code = str(call.code) if call.code is not None else "error"
            KUBE_API_REQUESTS.labels(verb, resource, code).inc()
            KUBE_API_SECONDS.labels(verb, resource).observe(time.monotonic() - started)


def record_error(span: Span, exc: BaseException, secrets: list[str]) -> None:
    """ERROR status and an exception event, with literal env values scrubbed from the message."""
    message = scrub(str(exc), secrets)
    span.set_status(Status(StatusCode.ERROR, message))
    span.add_event(
        "exception",
        {"exception.type": type(exc).__qualname__, "exception.message": message},
    )


@contextmanager
def under_workflow_trace(carrier: Mapping[str, str]) -> Iterator[None]:
    """Publish what happens inside (a retry) under the workflow's root span, not the task's."""
    if not carrier.get("traceparent"):
        yield
        return
    token = otel_context.attach(context_from(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


def trace_env() -> dict[str, str]:
    """`TRACEPARENT` for the Job's container, so the workload can continue the trace."""
    traceparent = current_carrier().get("traceparent")
    return {"TRACEPARENT": traceparent} if traceparent else {}


def workflow_submitted() -> None:
    WORKFLOWS_SUBMITTED.inc()


def workflow_launched() -> None:
    WORKFLOWS_LAUNCHED.inc()


def check_started(eta: object) -> None:
    """Observe how late this status check runs; `eta` is Celery's planned time (ISO text)."""
    if not isinstance(eta, str) or not eta:
        return
    planned = datetime.fromisoformat(eta)
    if planned.tzinfo is None:
        planned = planned.replace(tzinfo=UTC)
    STATUS_CHECK_LAG_SECONDS.observe(max(0.0, (datetime.now(UTC) - planned).total_seconds()))


def workflow_finished(outcome: WorkflowOutcome, stored: WorkflowOutcome) -> None:
    """An outcome span; metrics only when this outcome is the one stored (the first finisher)."""
    attributes = {
        **(w.attributes if (w := _current.get()) else {}),
        "workflow.state": stored.state.value,
        "workflow.reason": stored.reason,
    }
    if stored.exit_code is not None:
        attributes["workflow.exit_code"] = str(stored.exit_code)
    failed = stored.state in ERROR_STATES
    error = Status(StatusCode.ERROR, f"{stored.state.value}: {stored.reason}")
    with tracer.start_as_current_span("jobferry.outcome", attributes=attributes) as span:
        if failed:
            span.set_status(error)
            # The message is scrubbed already (workers/outcomes.py).
            span.add_event(
                "exception",
                {"exception.type": "WorkflowFailed", "exception.message": stored.message},
            )
    if failed:
        # The task that ended the workflow shows as failed too.
        trace.get_current_span().set_status(error)
    if stored != outcome:
        return
    WORKFLOWS_FINISHED.labels(stored.state.value, stored.reason).inc()
    if stored.duration_seconds is not None:
        JOB_RUN_SECONDS.observe(max(0.0, stored.duration_seconds))
    if stored.created_at is not None and stored.started_at is not None:
        waited = (stored.started_at - stored.created_at).total_seconds()
        JOB_TIME_TO_RUNNING_SECONDS.observe(max(0.0, waited))


class InflightCollector(Collector):
    """`jobferry_workflows_in_flight` and `jobferry_status_checks_parked`, read from Redis
    at scrape time."""

    def __init__(self, records: RecordStore) -> None:
        self._records = records

    def collect(self) -> Iterable[Metric]:
        try:
            inflight, parked = self._records.inflight_count(), self._records.parked_count()
        # Redis down: leave the gauges out rather than report a wrong number.
        except redis.RedisError as exc:
            log.warning("jobferry_workflows_in_flight not reported: %s", exc)
            return []
        gauges = []
        for name, text, value in (
            ("jobferry_workflows_in_flight", "Workflows submitted and not finished yet.", inflight),
            (
                "jobferry_status_checks_parked",
                "Status checks parked in Redis until they are due (workers/parking.py).",
                parked,
            ),
        ):
            gauge = GaugeMetricFamily(name, text)
            gauge.add_metric([], value)
            gauges.append(gauge)
        return gauges


def serve_metrics(port: int, records: RecordStore) -> bool:
    """Serve `/metrics` (every worker process's counts, and the in-flight gauge) on `port`.

    Returns:
        False when the port is taken: the worker runs on, and the log says so.
    """
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(InflightCollector(records))
    try:
        start_http_server(port, registry=registry)
    # Another process holds the port: metrics are lost, the work is not.
    except OSError as exc:
        log.error("cannot serve /metrics on port %d (%s); set JOBFERRY_METRICS_PORT", port, exc)
        return False
    log.info("serving Prometheus metrics on :%d/metrics", port)
    return True
