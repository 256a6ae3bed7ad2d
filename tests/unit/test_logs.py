"""Log lines that join traces (sequences/logs.py): the filter adds the current span's trace id,
or an event's own, and the workspace; the text and JSON formatters show them."""

from __future__ import annotations

import io
import json
import logging
import uuid

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from sequences import logs

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE}-{SPAN}-01"
WORKSPACE = uuid.UUID("00000000-0000-4000-8000-0000000000ab")


@pytest.fixture
def lines(monkeypatch):
    """A logger writing through the process's handler (as configure_logging makes it) into a
    buffer; `lines(json=True)` for LOG_FORMAT=json."""
    made = []

    def make(as_json: bool = False):
        monkeypatch.setenv("LOG_FORMAT", "json" if as_json else "text")
        buffer = io.StringIO()
        handler = logs.handler("mailer")
        handler.setStream(buffer)
        logger = logging.getLogger(f"test.logs.{uuid.uuid4().hex}")
        logger.propagate = False
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        made.append(logger)
        return logger, buffer
    yield make
    for logger in made:
        logger.handlers.clear()


def in_span(trace_id: str, span_id: str):
    context = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=False,
                          trace_flags=TraceFlags(1))
    return trace.use_span(NonRecordingSpan(context))


def test_json_lines_carry_the_current_spans_trace_and_the_workspace(lines):
    logger, buffer = lines(as_json=True)
    with in_span(TRACE, SPAN), logs.about(WORKSPACE):
        logger.info("sent %s", "kim@example.com")
    line = json.loads(buffer.getvalue())
    assert line["message"] == "sent kim@example.com" and line["level"] == "INFO"
    assert line["service"] == "mailer" and line["time"].endswith("+00:00")
    assert (line["trace_id"], line["span_id"], line["workspace_id"]) == (TRACE, SPAN,
                                                                         str(WORKSPACE))


def test_an_events_own_trace_id_without_any_span(lines):
    logger, buffer = lines(as_json=True)
    with logs.about(WORKSPACE, TRACEPARENT):
        logger.warning("handled")
    logger.warning("after")  # what was set is gone after the event
    inside, after = map(json.loads, buffer.getvalue().splitlines())
    assert inside["trace_id"] == TRACE and "span_id" not in inside
    assert inside["workspace_id"] == str(WORKSPACE)
    assert "trace_id" not in after and "workspace_id" not in after


def test_the_span_id_only_with_its_own_trace(lines):
    logger, buffer = lines(as_json=True)
    other = "1" * 32
    with in_span(other, SPAN), logs.about(None, TRACEPARENT):  # a batch's span, one event
        logger.info("x")
    line = json.loads(buffer.getvalue())
    assert line["trace_id"] == TRACE and "span_id" not in line


def test_a_traceback_is_one_json_line(lines):
    logger, buffer = lines(as_json=True)
    try:
        raise ValueError("bad")
    except ValueError:
        logger.exception("failed")
    [line] = buffer.getvalue().splitlines()
    found = json.loads(line)
    assert found["message"] == "failed" and "ValueError: bad" in found["exception"]


def test_text_lines_name_trace_and_workspace_before_a_traceback(lines):
    logger, buffer = lines()
    with logs.about(WORKSPACE, TRACEPARENT):
        try:
            raise ValueError("bad")
        except ValueError:
            logger.exception("failed")
    first, *rest = buffer.getvalue().splitlines()
    assert first.endswith(f"mailer {logger.name}: failed [trace_id={TRACE} workspace={WORKSPACE}]")
    assert rest[-1] == "ValueError: bad"
    logger.info("plain")
    assert buffer.getvalue().splitlines()[-1].endswith(": plain")


def test_set_workspace_lasts_for_the_task(lines):
    import contextvars

    def request():
        logs.set_workspace(WORKSPACE)
        logger.info("in a request")

    logger, buffer = lines(as_json=True)
    contextvars.copy_context().run(request)  # a request's task has a context of its own
    logger.info("elsewhere")
    inside, elsewhere = map(json.loads, buffer.getvalue().splitlines())
    assert inside["workspace_id"] == str(WORKSPACE) and "workspace_id" not in elsewhere


@pytest.mark.parametrize("value", [None, "", "garbage", "00-short-span-01"])
def test_a_missing_or_odd_traceparent_gives_no_trace_id(value):
    assert logs.trace_id_of(value) is None
