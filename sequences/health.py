"""Health and readiness of a service process, over HTTP for probes (`HEALTH_PORT`).

`/metrics`: the process's metrics as Prometheus text (`sequences.metrics`).
`/healthz`: the process answers (its event loop runs). `/readyz`: it can do its work: PostgreSQL
answers and NATS is connected. A tiny HTTP/1.0 responder on asyncio: no web framework in
services that have no other HTTP to serve.
"""

from __future__ import annotations

import asyncio
import json
import logging

from nats.aio.client import Client
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sequences import metrics

log = logging.getLogger(__name__)

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


async def readiness(engine: AsyncEngine, nc: Client) -> dict[str, bool]:
    checks = {"nats": nc.is_connected, "postgresql": False}
    try:
        async with asyncio.timeout(2):
            async with engine.connect() as conn:
                checks["postgresql"] = (await conn.execute(text("SELECT 1"))).scalar() == 1
    except Exception:
        pass
    return checks


async def _write(writer: asyncio.StreamWriter, status: int, payload: bytes,
                 content_type: str) -> None:
    writer.write(f"HTTP/1.0 {status} {'OK' if status == 200 else 'Not OK'}\r\n"
                 f"Content-Type: {content_type}\r\nContent-Length: {len(payload)}"
                 "\r\n\r\n".encode() + payload)
    await writer.drain()


async def serve_health(port: int, engine: AsyncEngine, nc: Client) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            path = request.decode("latin-1").split(" ")[1] if request.count(b" ") >= 2 else ""
            if path == "/metrics":
                await _write(writer, 200, metrics.prometheus_text(), PROMETHEUS_TEXT)
                return
            if path == "/healthz":
                status, body = 200, {"status": "ok"}
            elif path == "/readyz":
                checks = await readiness(engine, nc)
                status = 200 if all(checks.values()) else 503
                body = {"status": "ready" if status == 200 else "not ready", **checks}
            else:
                status, body = 404, {"status": "not found"}
            await _write(writer, status, json.dumps(body).encode(), "application/json")
        except (asyncio.TimeoutError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "0.0.0.0", port)
    log.info("health on :%d (/healthz, /readyz, /metrics)", port)
    async with server:
        await server.serve_forever()
