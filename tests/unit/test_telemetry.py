"""Tracing set-up from OTEL_* variables, and JSON log lines that carry the trace.

The global TracerProvider can be set once per process, so each set-up case runs in a fresh
interpreter.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
from opentelemetry.sdk.trace import TracerProvider

from tests.services import ROOT
from workers import logconfig


def run_python(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "JOBFERRY_"))}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


SHOW = """
    import os
    from opentelemetry import trace
    from scheduler.tracing import configure_tracing
    installed = configure_tracing("jobferry-producer", os.environ, without_exporter={bare})
    provider = trace.get_tracer_provider()
    processors = getattr(provider, "_active_span_processor", None)
    count = len(processors._span_processors) if processors else "-"
    name = provider.resource.attributes["service.name"] if installed else "-"
    print(installed, type(provider).__name__, count, name)
"""


@pytest.mark.parametrize(
    ("bare", "env", "expected"),
    [
        # A producer with nowhere to export leaves the global provider to the application.
        (False, {}, "False ProxyTracerProvider - -"),
        (False, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, "True TracerProvider 1 "),
        (
            False,
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces"},
            "True TracerProvider 1 ",
        ),
        # A worker always gets ids (for logs and TRACEPARENT), exporting nothing.
        (True, {}, "True TracerProvider 0 "),
        (False, {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"}, "False Proxy"),
        (False, {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"}, "False "),
    ],
)
def test_tracing_follows_the_otel_variables(bare: bool, env: dict[str, str], expected: str) -> None:
    assert run_python(SHOW.format(bare=bare), **env).startswith(expected)


def test_service_name_defaults_but_otel_service_name_wins() -> None:
    out = run_python(SHOW.format(bare=True))
    assert out.endswith(" jobferry-producer")
    out = run_python(SHOW.format(bare=True), OTEL_SERVICE_NAME="billing-api")
    assert out.endswith(" billing-api")


def test_an_applications_own_provider_is_kept() -> None:
    out = run_python(
        """
        import os
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from scheduler import Jobferry, load_settings
        from scheduler.tracing import configure_tracing

        mine = TracerProvider()
        trace.set_tracer_provider(mine)
        Jobferry(load_settings(environ={}))
        installed = configure_tracing("jobferry-producer", os.environ)
        print(installed, trace.get_tracer_provider() is mine)
        """,
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
    )
    assert out == "False True"


def test_json_lines_carry_fields_and_the_trace() -> None:
    logger = logging.getLogger("jobferry.test-json")
    stream = io.StringIO()
    logger.addHandler(logging.StreamHandler(stream))
    logger.propagate = False
    logconfig.apply(logger, "json")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("task") as span:
        logger.warning(
            "workflow %s: %s", "wf-1", "running", extra={"workflow_id": "wf-1", "state": "running"}
        )
    logger.warning("outside any span")
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["message"] == "workflow wf-1: running"
    assert (inside["workflow_id"], inside["state"], inside["level"]) == (
        "wf-1",
        "running",
        "WARNING",
    )
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert inside["span_id"] == format(span.get_span_context().span_id, "016x")
    assert "trace_id" not in outside


def test_text_lines_stay_text() -> None:
    logger = logging.getLogger("jobferry.test-text")
    stream = io.StringIO()
    logger.addHandler(logging.StreamHandler(stream))
    logger.propagate = False
    logconfig.apply(logger, "text")
    logger.warning("plain %s", "line")
    assert stream.getvalue() == "plain line\n"
