"""OpenTelemetry: one tracer provider per process, W3C trace context carried in events.

Each appended event records the trace context of the append; whoever consumes it continues
that trace, so one trace follows a request from HTTP through every service to SMTP.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from typing import Mapping

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"


class JsonLinesExporter(SpanExporter):
    """Test harness: every process appends its finished spans to one file, one JSON object a
    line (an in-memory exporter that survives the process boundary)."""

    def __init__(self, path: str):
        self._path = path

    def export(self, spans) -> SpanExportResult:
        lines = "".join(json.dumps({
            "service": span.resource.attributes.get("service.name"),
            "name": span.name,
            "trace_id": format(span.context.trace_id, "032x"),
            "span_id": format(span.context.span_id, "016x"),
            "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
            "attributes": {k: str(v) for k, v in (span.attributes or {}).items()},
        }) + "\n" for span in spans)
        with open(self._path, "a") as file:  # O_APPEND: lines of processes do not interleave
            file.write(lines)
        return SpanExportResult.SUCCESS


def service_resource(service_name: str) -> Resource:
    """Who reports: the service, and which replica of it (host and process), so that two
    replicas' metrics pushed over OTLP stay two series (the collector's Prometheus exporter
    makes service.instance.id the `instance` label)."""
    return Resource.create({"service.name": service_name,
                            "service.instance.id": f"{socket.gethostname()}:{os.getpid()}"})


def setup_tracing(service_name: str) -> TracerProvider | None:
    """Record spans only when they go somewhere (OTLP, or the tests' span file): otherwise the
    API's no-op tracer stays in place, which saved a quarter of the scheduler's CPU."""
    trace_file = os.environ.get("SEQUENCES_TRACE_FILE")
    otlp = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not trace_file and not otlp:
        return None
    provider = TracerProvider(resource=service_resource(service_name))
    if trace_file:
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(trace_file)))
    if otlp:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def current_trace_headers() -> dict[str, str]:
    """The W3C trace context of the active span, as `traceparent` / `tracestate`."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def context_from(headers: Mapping[str, str | None]) -> context.Context:
    return propagate.extract({k: v for k, v in headers.items() if v})
