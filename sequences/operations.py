"""The operator's key figures, read live from JetStream and PostgreSQL: lag per durable
consumer, the outbox, the due-step backlog, sends per minute, mailbox health, webhooks and
recent handler errors. One reading serves the metrics gauges (`sequences.metrics`), the web
app's operations page and `sequences status`."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from nats.js import JetStreamContext
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.subjects import EVENTS_STREAM


@dataclass(frozen=True)
class ConsumerLag:
    consumer: str
    pending: int  # not delivered yet, plus delivered and not acknowledged
    oldest_age: float  # seconds; 0 when nothing is pending


@dataclass(frozen=True)
class HandlerError:
    at: datetime
    consumer: str
    event_type: str
    stream_id: str
    error: str
    trace_id: str | None


@dataclass
class Figures:
    at: datetime
    consumers: list[ConsumerLag] = field(default_factory=list)
    outbox_depth: int | None = None
    outbox_oldest_age: float | None = None
    due_pending: int | None = None
    due_late: int | None = None
    due_oldest_late_age: float | None = None
    sent_last_minute: int | None = None
    mailboxes_healthy: int | None = None
    mailboxes_unhealthy: list[tuple[str, str]] = field(default_factory=list)  # address, problem
    webhooks_pending: int | None = None
    webhooks_oldest_age: float | None = None
    errors: list[HandlerError] = field(default_factory=list)

    def as_json(self) -> dict:
        return asdict(self)


async def consumer_lag(js: JetStreamContext, names: list[str] | None = None,
                       now: datetime | None = None) -> list[ConsumerLag]:
    """Each durable consumer's backlog (of `names`, or all of the events stream). The oldest
    age is that of the first event after the consumer's acknowledged floor: the oldest one it
    has not handled, or an older event of another category (so at most that old)."""
    now = now or datetime.now(timezone.utc)
    if names is None:
        infos = await js.consumers_info(EVENTS_STREAM)
    else:
        infos = [await js.consumer_info(EVENTS_STREAM, name) for name in names]
    lags = []
    for info in infos:
        pending = (info.num_pending or 0) + (info.num_ack_pending or 0)
        age = 0.0
        if pending:
            with contextlib.suppress(Exception):
                oldest = await js.get_msg(EVENTS_STREAM, seq=(info.ack_floor.stream_seq or 0) + 1)
                age = _age(now, _utc(oldest.time))
        lags.append(ConsumerLag(info.name, pending, age))
    return sorted(lags, key=lambda lag: lag.consumer)


def _utc(stamp: datetime | None) -> datetime | None:
    return stamp.replace(tzinfo=timezone.utc) if stamp and not stamp.tzinfo else stamp


_OUTBOX = text(
    "SELECT count(*), min(e.recorded_at) FROM eventlog.outbox o"
    " JOIN eventlog.events e ON e.position = o.position")
_DUE = text(
    "SELECT count(*), count(*) FILTER (WHERE due_at <= :now),"
    " min(due_at) FILTER (WHERE due_at <= :now)"
    " FROM scheduler.due_steps WHERE state = 'pending'")
_SENT = text("SELECT count(*) FROM mailer.deliveries WHERE sent_at > :since")
_MAILBOXES = text("SELECT address, healthy, coalesce(problem, '') FROM mailer.mailboxes"
                  " ORDER BY address")
_WEBHOOKS = text("SELECT count(*), min(created_at) FROM webhooks.deliveries"
                 " WHERE state = 'pending'")
_ERRORS = text(
    "SELECT at, consumer, event_type, stream_id, error, trace_id FROM eventlog.handler_errors"
    " ORDER BY at DESC LIMIT :limit")


def _age(now: datetime, then: datetime | None) -> float:
    return max(0.0, (now - then).total_seconds()) if then else 0.0


async def outbox(engine: AsyncEngine, now: datetime) -> tuple[int, float]:
    async with engine.connect() as conn:
        depth, oldest = (await conn.execute(_OUTBOX)).one()
    return depth, _age(now, oldest)


async def due_steps(engine: AsyncEngine, now: datetime) -> tuple[int, int, float]:
    """Pending steps, those due and not fired, and how long the oldest of these is due. `now`
    is the service clock (on the dev stack it moves)."""
    async with engine.connect() as conn:
        pending, late, oldest = (await conn.execute(_DUE, {"now": now})).one()
    return pending, late, _age(now, oldest)


async def webhook_backlog(engine: AsyncEngine, now: datetime) -> tuple[int, float]:
    async with engine.connect() as conn:
        pending, oldest = (await conn.execute(_WEBHOOKS)).one()
    return pending, _age(now, oldest)


async def recent_errors(engine: AsyncEngine, limit: int = 20) -> list[HandlerError]:
    async with engine.connect() as conn:
        rows = (await conn.execute(_ERRORS, {"limit": limit})).all()
    return [HandlerError(*row) for row in rows]


async def figures(engine: AsyncEngine, js: JetStreamContext, now: datetime,
                  wall: datetime | None = None) -> Figures:
    """Everything at once. `now` is the service clock (due steps, sends), `wall` the real time
    (JetStream and the outbox stamp events with it). A part that cannot be read stays None."""
    wall = wall or datetime.now(timezone.utc)
    found = Figures(at=now)
    with contextlib.suppress(Exception):
        found.consumers = await asyncio.wait_for(consumer_lag(js, now=wall), 5)
    with contextlib.suppress(DBAPIError):
        found.outbox_depth, found.outbox_oldest_age = await outbox(engine, wall)
    with contextlib.suppress(DBAPIError):
        found.due_pending, found.due_late, found.due_oldest_late_age = await due_steps(engine,
                                                                                       now)
    with contextlib.suppress(DBAPIError):
        async with engine.connect() as conn:
            since = now.timestamp() - 60
            found.sent_last_minute = (await conn.execute(
                _SENT, {"since": datetime.fromtimestamp(since, timezone.utc)})).scalar()
            boxes = (await conn.execute(_MAILBOXES)).all()
        found.mailboxes_healthy = sum(1 for _, healthy, _ in boxes if healthy)
        found.mailboxes_unhealthy = [(address, problem) for address, healthy, problem in boxes
                                     if not healthy]
    with contextlib.suppress(DBAPIError):
        found.webhooks_pending, found.webhooks_oldest_age = await webhook_backlog(engine, wall)
    with contextlib.suppress(DBAPIError):
        found.errors = await recent_errors(engine)
    return found
