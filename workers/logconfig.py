"""Worker log lines as text or JSON, with the trace they belong to.

Celery configures the handlers (level, stream); this only swaps their formatter for
`JOBFERRY_LOG_FORMAT=json` and adds `trace_id`/`span_id` to every record made inside a span.
State changes log `workflow_id`, `job_name`, `state` (and `reason` or `detail`) as structured
fields (`extra=`), so a JSON line can be filtered without parsing the message.
"""

from __future__ import annotations

import logging
from typing import Literal

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter


class TraceContextFilter(logging.Filter):
    """Adds `trace_id` and `span_id` (hex, as trace viewers show them) when a span is active."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        return True


def json_formatter() -> logging.Formatter:
    return JsonFormatter(
        "{asctime}{levelname}{name}{processName}{message}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )


def apply(logger: logging.Logger, log_format: Literal["text", "json"]) -> None:
    """Give `logger`'s handlers the trace filter, and the JSON formatter when asked."""
    for handler in logger.handlers:
        if not any(isinstance(f, TraceContextFilter) for f in handler.filters):
            handler.addFilter(TraceContextFilter())
        if log_format == "json":
            handler.setFormatter(json_formatter())
