"""The gateway: the HTTP API (FastAPI). It holds no business state: it knows who calls (API keys
of workspaces, `accounts.py`), validates input with the contract models, sends commands and
queries to the services over NATS in the caller's workspace, and answers with theirs.

This module only assembles the app: lifespan, tracing, probes, the AsyncAPI document, and the
JSON API (`api/`)."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from contextlib import asynccontextmanager

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from opentelemetry.trace import NoOpTracerProvider, SpanKind
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from contracts import commands as c
from sequences.bootstrap import configure_logging, tune_garbage_collector
from sequences.config import Settings
from sequences.db import create_engine, migrate
from sequences import metrics
from sequences.messaging.nats import connect
from sequences.health import PROMETHEUS_TEXT
from sequences.signing import signer_from_env
from sequences.tracing import setup_tracing, tracer
from services.gateway import accounts, bus
from services.gateway.click_batch import ClickBatcher
from services.gateway.api import include_api
from services.gateway.web import include_web
from services.gateway.api.problems import PROBLEM_RESPONSES
from services.gateway.bus import ProblemError
from services.gateway.timing import ServerTiming

_tracer = tracer(__name__)
# users, sessions and keys (as every service's, applied by `sequences migrate` and the admin
# commands too, so a workspace can be made before the gateway first started)
MIGRATIONS = accounts.MIGRATIONS


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(
        title="Sequences API",
        version="1",
        description="Automatic sales follow-up sequences.",
        lifespan=_lifespan(settings),
        responses=PROBLEM_RESPONSES,
    )
    app.state.signer = signer_from_env()
    app.include_router(_probes())  # first, as before the split: the OpenAPI order stays
    include_api(app, settings)
    # the web app (services/gateway/web/), after the API
    include_web(app, settings.public_url, dev_clock=settings.clock == "adjustable")
    app.middleware("http")(_trace_requests)  # added last, so it runs first: the span holds all
    app.add_middleware(ServerTiming)  # around even that: the time of everything
    _measure_requests(app)
    return app


def _measure_requests(app: FastAPI) -> None:
    """http.server.request.duration by route and status (the standard instrumentation, in the
    stable HTTP conventions); its spans are off: `_trace_requests` makes the server span.
    The links in emails (`/c/`, `/t/`) are left out: the instrumentation finds a request's
    route by walking every route of the app (about 1.2 ms a request here), which halved the
    click redirects' rate; `sequences.tracking.clicks` counts the redirects instead."""
    if not metrics.enabled():
        return
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, tracer_provider=NoOpTracerProvider(),
                                       excluded_urls="metrics,healthz,readyz,/c/[^/]+$,"
                                                     "/t/[^/]+$")


def _lifespan(settings: Settings):
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.engine = create_engine(settings.database_url, pool_size=5)
        await migrate(app.state.engine, MIGRATIONS)
        app.state.nc = await connect(settings.nats_url, name="sequences-gateway")
        app.state.clicks = ClickBatcher(lambda command: bus.send(app.state.nc, command))
        app.state.clicks.start()
        tune_garbage_collector()
        yield
        await app.state.clicks.close()  # the clicks waiting go out before NATS closes
        await app.state.nc.close()
        await app.state.engine.dispose()

    return lifespan


async def _trace_requests(request: Request, call_next):
    """A server span per request: the root of the trace that follows it through NATS."""
    with _tracer.start_as_current_span(f"{request.method} {request.url.path}",
                                       kind=SpanKind.SERVER) as span:
        response = await call_next(request)
        span.set_attribute("http.status_code", response.status_code)
        return response


def _probes() -> APIRouter:
    probes = APIRouter()
    asyncapi: list[bytes] = []  # made once, on the first request

    @probes.get("/healthz", include_in_schema=False)
    async def healthz():
        return {"status": "ok"}

    @probes.get("/readyz", include_in_schema=False)
    async def readyz(request: Request):
        """Ready when NATS is connected and the enrollment service answers through it."""
        checks = {"nats": request.app.state.nc.is_connected,
                  "postgresql": await _database_answers(request),
                  "enrollment": await _enrollment_answers(request)}
        ready = all(checks.values())
        return JSONResponse({"status": "ready" if ready else "not ready", **checks},
                            status_code=200 if ready else 503)

    @probes.get("/metrics", include_in_schema=False)
    async def prometheus_metrics():
        """The gateway's metrics as Prometheus text (the services serve theirs on HEALTH_PORT)."""
        return Response(metrics.prometheus_text(), media_type=PROMETHEUS_TEXT)

    @probes.get("/asyncapi.json", tags=["events"])
    async def events_document():
        """The AsyncAPI document of every public event (subject, envelope, data schema)."""
        if not asyncapi:
            asyncapi.append(await _asyncapi_document())
        return Response(asyncapi[0], media_type="application/json")

    return probes


async def _asyncapi_document() -> bytes:
    """FastStream makes the document in a child process: its modules (about 28 MB resident)
    serve nothing else in the gateway, whose memory has a budget (issue 12: under 150 MB)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import json, sys; from contracts.asyncapi import asyncapi_document;"
        " sys.stdout.write(json.dumps(asyncapi_document()))",
        stdout=asyncio.subprocess.PIPE)
    document, _ = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError("the AsyncAPI document could not be made (see the gateway's stderr)")
    return document


async def _database_answers(request: Request) -> bool:
    try:
        async with request.app.state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except DBAPIError:
        return False


async def _enrollment_answers(request: Request) -> bool:
    """A query for a sequence nobody has: the service's 404 shows it is up and reading."""
    nobody = uuid.UUID(int=0)
    try:
        await bus.send(request.app.state.nc, c.GetSequence(workspace_id=nobody,
                                                           sequence_id=nobody))
    except ProblemError as problem:
        return problem.problem.status == 404
    return False


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.log_level, "gateway")
    setup_tracing("sequences-gateway")
    metrics.setup_metrics("sequences-gateway")
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=settings.gateway_host,
            port=settings.gateway_port,
            log_level=settings.log_level.lower(),
            access_log=False,
            log_config=None,  # uvicorn's lines through the process's handler (trace ids, JSON)
        )
    )
    asyncio.run(server.serve())
