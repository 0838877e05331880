"""OpenTelemetry set-up shared by producers and workers: one trace per workflow.

Configuration comes from the standard `OTEL_*` variables, read by the OpenTelemetry SDK
itself: spans are exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and nowhere otherwise; `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `OTEL_SDK_DISABLED` work as documented.

An application that configured its own `TracerProvider` keeps it: jobferry then only adds its
spans to it. The submit span's context is stored in the workflow record, so every later task
(launch, each status check) can hang under the same trace even after retries and redeliveries.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

# Span attribute names, from the guide jobferry grew from.
WORKFLOW_ID = "workflow.id"
K8S_NAMESPACE = "k8s.namespace"
K8S_IMAGE = "k8s.container.image"
K8S_JOB_NAME = "k8s.job.name"

tracer = trace.get_tracer("jobferry")

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def configure_tracing(
    service_name: str, environ: Mapping[str, str], *, without_exporter: bool = False
) -> bool:
    """Install an SDK `TracerProvider` unless the process already has one.

    Parameters:
        service_name: `service.name` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`
            name one.
        environ: the process environment, for the `OTEL_*` variables.
        without_exporter: install a provider even when nothing is exported, so spans get real
            ids (log lines and the Job's TRACEPARENT carry them). Workers do; a producer does
            not, leaving the global provider free for the application to set later.

    Returns:
        True when this call installed the provider.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        # The application configured tracing itself: respect it.
        return False
    exporting = any(environ.get(name) for name in _ENDPOINT_VARIABLES) and environ.get(
        "OTEL_TRACES_EXPORTER", "otlp"
    ).strip().lower() not in ("none", "")
    if not exporting and not without_exporter:
        return False
    named = environ.get("OTEL_SERVICE_NAME") or "service.name=" in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    provider = TracerProvider(
        resource=Resource.create({} if named else {SERVICE_NAME: service_name})
    )
    if exporting:
        # Imported here: only a process that exports pays for the exporter and protobuf.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True


def instrument_celery() -> None:
    """Trace publishing and running of Celery tasks; the context travels in message headers."""
    # Imported here: it imports billiard, which reads REMAP_SIGTERM once on import, and
    # `jobferry worker` sets that variable after importing the producer side.
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


def current_carrier() -> dict[str, str]:
    """The active trace context as W3C headers (`traceparent`, maybe `tracestate`); {} if none."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def context_from(carrier: Mapping[str, str]) -> Context:
    return propagate.extract(dict(carrier))


def workflow_attributes(
    workflow_id: str, namespace: str, image: str, job_name: str
) -> dict[str, str]:
    return {
        WORKFLOW_ID: workflow_id,
        K8S_NAMESPACE: namespace,
        K8S_IMAGE: image,
        K8S_JOB_NAME: job_name,
    }
