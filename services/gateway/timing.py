"""`Server-Timing: app;dur=<ms>` on every answer: the time the gateway took, from the request's
arrival to the start of its answer (routing, authentication, the NATS round trip to the service,
rendering). The page benchmark (`bench/app_pages.py`) reads it, so what it measures is server
time without the client's own overhead; browsers show it in their network panel.

A plain ASGI middleware, added last so it wraps every other one."""

from __future__ import annotations

import time


class ServerTiming:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()

        async def timed(message):
            if message["type"] == "http.response.start":
                took = (time.perf_counter() - started) * 1000
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (b"server-timing", b"app;dur=%.1f" % took)]}
            await send(message)

        await self.app(scope, receive, timed)
