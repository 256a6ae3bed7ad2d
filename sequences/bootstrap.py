"""The composition root: wires real adapters (PostgreSQL, NATS, clock, relay, consumers) into a
service and runs it until SIGTERM/SIGINT. Tests build the same parts with their own settings."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Awaitable, Callable

from nats.aio.client import Client
from nats.js import JetStreamContext
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from sequences.clock import AdjustableClock, Clock, SystemClock
from sequences.config import Settings
from sequences.db import Migrations, create_engine, migrate
from sequences.eventlog.relay import Relay
from sequences import metrics, operations
from sequences.health import serve_health
from sequences.eventlog.store import EventStore
from sequences.messaging import rpc
from sequences.messaging.consumer import EventConsumer, Subscription
from sequences.messaging.nats import connect, ensure_events_stream
from sequences import logs
from sequences.metrics import setup_metrics
from sequences.tracing import setup_tracing

log = logging.getLogger(__name__)

EVENTLOG_MIGRATIONS = Migrations("eventlog", Path(__file__).parent / "eventlog" / "migrations")


@dataclass
class Runtime:
    """The real adapters a service is built from."""

    name: str
    settings: Settings
    engine: AsyncEngine
    nc: Client
    js: JetStreamContext
    clock: Clock
    store: EventStore

    async def close(self) -> None:
        # not drain(): its pending pull requests would hold it until the drain timeout; work in
        # flight was already cancelled, and JetStream redelivers whatever was not acknowledged
        with contextlib.suppress(Exception):
            await self.nc.close()
        await self.engine.dispose()


@dataclass
class ServiceParts:
    """What a service adds to the runtime: its consumers, request handlers and loops."""

    subscriptions: list[Subscription] = field(default_factory=list)
    requests: dict[type[BaseModel], Callable] = field(default_factory=dict)
    loops: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # gauges of this service's own state (the scheduler's due steps, ...): the names a source
    # reports and the source (`sequences.metrics.Sampler`)
    samples: list[tuple[tuple[str, ...], metrics.SampleSource]] = field(default_factory=list)


def configure_logging(level: str, name: str) -> None:
    """Every log line of the process with its trace id and workspace; JSON lines when
    LOG_FORMAT=json (sequences/logs.py)."""
    logging.basicConfig(level=level, handlers=[logs.handler(name)])
    # per-request noise of the HTTP and NATS clients is not worth an operator's attention
    for noisy in ("httpx", "aiosmtplib", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def start_runtime(name: str, settings: Settings, *migrations: Migrations) -> Runtime:
    engine = create_engine(settings.database_url)
    await migrate(engine, EVENTLOG_MIGRATIONS, *migrations)
    nc = await connect(settings.nats_url, name=f"sequences-{name}")
    js = nc.jetstream()
    await ensure_events_stream(js, settings.nats_replicas)
    clock: Clock = AdjustableClock() if settings.clock == "adjustable" else SystemClock()
    return Runtime(name, settings, engine, nc, js, clock, EventStore(clock))


def background_loops(runtime: Runtime, parts: ServiceParts) -> list[Callable[[], Awaitable[None]]]:
    """Every long-running task of a service: relay, consumers, clock follower, its own loops."""
    relay = Relay(runtime.settings.database_url, runtime.js,
                  keep_seconds=runtime.settings.relay_keep_seconds)
    loops: list[Callable[[], Awaitable[None]]] = [relay.run]
    loops += [EventConsumer(s, runtime.js, runtime.engine).run for s in parts.subscriptions]
    if metrics.enabled():
        loops.append(metrics.Sampler(
            _common_samples(runtime, relay, parts.subscriptions) + parts.samples).run)
    if isinstance(runtime.clock, AdjustableClock):
        clock = runtime.clock
        loops.append(lambda: clock.follow(runtime.js))
    if runtime.settings.health_port:
        loops.append(lambda: serve_health(runtime.settings.health_port, runtime.engine, runtime.nc))
    return loops + parts.loops


def _common_samples(runtime: Runtime, relay: Relay, subscriptions: list[Subscription]):
    """Every service reports the lag of its own consumers; the active relay, the outbox."""
    names = [s.name for s in subscriptions]

    async def lags() -> list[metrics.Sample]:
        found = await operations.consumer_lag(runtime.js, names) if names else []
        return [sample for lag in found for sample in (
            ("sequences.consumer.pending", {"consumer": lag.consumer}, lag.pending),
            ("sequences.consumer.oldest_pending_age", {"consumer": lag.consumer},
             lag.oldest_age))]

    async def outbox() -> list[metrics.Sample]:
        if not relay.active:
            return []
        depth, age = await operations.outbox(runtime.engine, datetime.now(timezone.utc))
        return [("sequences.outbox.depth", {}, depth), ("sequences.outbox.oldest_age", {}, age)]

    return [(("sequences.consumer.pending", "sequences.consumer.oldest_pending_age"), lags),
            (("sequences.outbox.depth", "sequences.outbox.oldest_age"), outbox)]


# Collections of the youngest generation every this many new container objects (Python's
# default is 700): a 2,000-row import chunk makes tens of thousands, and each collection also
# walks what survived the last ones. Memory grows by at most that many young objects.
GC_YOUNGEST_THRESHOLD = 20_000


def tune_garbage_collector() -> None:
    """Once a service has started: what it built to start (modules, models, schemas, the app)
    lives as long as the process, so it is moved out of the collector's sight (`gc.freeze`),
    and the youngest generation is collected less often. Both cut the time the collector takes
    from request work (bench/README.md, "Contact import")."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNGEST_THRESHOLD, middle, oldest)


async def run_service(
    name: str,
    build: Callable[[Runtime], ServiceParts],
    migrations: tuple[Migrations, ...] = (),
) -> None:
    settings = Settings.from_env()
    configure_logging(settings.log_level, name)
    setup_tracing(f"sequences-{name}")
    setup_metrics(f"sequences-{name}")
    runtime = await start_runtime(name, settings, *migrations)
    parts = build(runtime)
    tune_garbage_collector()
    await rpc.serve(runtime.nc, name, parts.requests)
    tasks = [asyncio.create_task(_supervised(loop)) for loop in background_loops(runtime, parts)]
    log.info("%s started", name)
    await _until_signalled()
    log.info("%s stopping", name)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await runtime.close()
    log.info("%s stopped", name)


async def _supervised(loop: Callable[[], Awaitable[None]]) -> None:
    """Restart a background loop that failed unexpectedly instead of leaving the service half up."""
    while True:
        try:
            await loop()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task failed; restarting it in 1 s")
            await asyncio.sleep(1)


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
