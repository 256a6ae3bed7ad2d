"""Log lines that join traces: each record of a request or an event carries its trace id (and
span id) and its workspace, as text (`... [trace_id=… workspace=…]`) or, with
`LOG_FORMAT=json`, one JSON object per line.

The trace id is the current OpenTelemetry span's; while an event is handled it is the event's
own (its W3C traceparent), which is also its consumer span's trace when tracing is on, and the
only one when it is off. The workspace is set where it becomes known: the gateway's API key,
a command's or query's `workspace_id`, an event's envelope.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Iterator

from opentelemetry import trace

_workspace: ContextVar[str | None] = ContextVar("log_workspace", default=None)
_trace_id: ContextVar[str | None] = ContextVar("log_trace_id", default=None)

# the attributes a record gets (None when unknown)
CONTEXT_FIELDS = ("trace_id", "span_id", "workspace_id")


def set_workspace(workspace_id: uuid.UUID | str | None) -> None:
    """The workspace of what this task does from now on (a request's, after its key)."""
    _workspace.set(str(workspace_id) if workspace_id else None)


@contextlib.contextmanager
def about(workspace_id: uuid.UUID | str | None = None,
          traceparent: str | None = None) -> Iterator[None]:
    """Log lines inside are about this workspace and the trace of `traceparent` (an event's,
    a command's); what was set before comes back after."""
    workspace = _workspace.set(str(workspace_id) if workspace_id else _workspace.get())
    trace_id = _trace_id.set(trace_id_of(traceparent) or _trace_id.get())
    try:
        yield
    finally:
        _trace_id.reset(trace_id)
        _workspace.reset(workspace)


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C traceparent (version-traceid-spanid-flags)."""
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


class TraceContext(logging.Filter):
    """Adds `trace_id`, `span_id` and `workspace_id` to every record (None when unknown)."""

    def filter(self, record: logging.LogRecord) -> bool:
        span = trace.get_current_span().get_span_context()
        current = format(span.trace_id, "032x") if span.is_valid else None
        record.trace_id = _trace_id.get() or current
        record.span_id = format(span.span_id, "016x") \
            if span.is_valid and current == record.trace_id else None
        record.workspace_id = _workspace.get()
        return True


class TextFormatter(logging.Formatter):
    """The usual line, with `[trace_id=… span_id=… workspace=…]` after it when known."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        known = [f"{label}={value}" for label, value in (
            ("trace_id", getattr(record, "trace_id", None)),
            ("span_id", getattr(record, "span_id", None)),
            ("workspace", getattr(record, "workspace_id", None))) if value]
        if not known:
            return line
        first, newline, rest = line.partition("\n")  # after the message, before a traceback
        return f"{first} [{' '.join(known)}]{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, service, logger, message, the
    trace and workspace fields when known, and the traceback as `exception`."""

    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            if (value := getattr(record, name, None)) is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["exception"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def json_logs() -> bool:
    return os.environ.get("LOG_FORMAT", "text").strip().lower() == "json"


def handler(service: str) -> logging.Handler:
    """The one handler of a process: stderr, trace context added, text or JSON lines."""
    made = logging.StreamHandler()
    made.addFilter(TraceContext())
    made.setFormatter(JsonFormatter(service) if json_logs() else TextFormatter(
        f"%(asctime)s %(levelname)-7s {service} %(name)s: %(message)s"))
    return made
