"""`Server-Timing` on every answer: `app;dur=<ms>`, the time the gateway took from the request's
arrival to the start of its answer (routing, authentication, the NATS round trips to the
services, rendering), followed by the parts measured within it: one entry per NATS request,
named by its message (`GetSequence;dur=…`), and `render` for the template. The page benchmark
(`bench/app_pages.py`) reads it, so what it measures is server time without the client's own
overhead, and where that time went; browsers show it in their network panel.

A plain ASGI middleware, added last so it wraps every other one. The parts are collected in a
context variable the middleware sets per request, so concurrent requests never mix."""

from __future__ import annotations

import contextlib
import re
import time
from contextvars import ContextVar

_parts: ContextVar[list[tuple[str, float]] | None] = ContextVar("server_timing_parts",
                                                               default=None)
_TOKEN = re.compile(r"[^A-Za-z0-9_.-]")


@contextlib.contextmanager
def part(name: str):
    """Time the block as one part of this request's answer; a no-op outside a request."""
    parts = _parts.get()
    started = time.perf_counter()
    try:
        yield
    finally:
        if parts is not None:
            parts.append((_TOKEN.sub("_", name), (time.perf_counter() - started) * 1000))


def header(total_ms: float, parts: list[tuple[str, float]]) -> bytes:
    entries = [f"app;dur={total_ms:.1f}", *(f"{name};dur={ms:.1f}" for name, ms in parts)]
    return ", ".join(entries).encode()


def server_timing(value: str) -> dict[str, float]:
    """The header read back: {name: milliseconds}, parts of the same name summed (a page that
    asks twice for the same thing shows the cost of both)."""
    timings: dict[str, float] = {}
    for entry in value.split(","):
        name, _, params = entry.strip().partition(";")
        for param in params.split(";"):
            key, _, number = param.strip().partition("=")
            if key == "dur" and name:
                timings[name] = timings.get(name, 0.0) + float(number)
    return timings


class ServerTiming:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        parts: list[tuple[str, float]] = []
        token = _parts.set(parts)

        async def timed(message):
            if message["type"] == "http.response.start":
                took = (time.perf_counter() - started) * 1000
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (b"server-timing", header(took, parts))]}
            await send(message)

        try:
            await self.app(scope, receive, timed)
        finally:
            _parts.reset(token)
