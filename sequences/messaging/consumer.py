"""Durable JetStream consumers whose handlers take effect once per event.

Each handler runs in a PostgreSQL transaction that also moves the consumer's position in the
event's stream (`eventlog.consumer_positions`). A redelivered event is at or below that position
and changes nothing; an event that arrives before an earlier one of its stream (replicas, or a
redelivery overtaking) is handed back to JetStream to come again once the earlier one is done.
Events of different streams are processed concurrently, events of one stream in order. A
consumer is given only the event types it handles (JetStream filter subjects); the versions it
skips are told from events still on their way by the log (`eventlog.consumer_filters`).

A fetched batch is handled in one transaction; a batch handler may hand back the events it
cannot handle yet (`HandBack`), which come again later while the others are done. When a
handler fails, the batch is handled again event by event, so one bad event holds up no other.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid
import zlib
from collections import defaultdict
from contextvars import ContextVar
from itertools import groupby
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts.base import EVENT_TYPES, Event, EventEnvelope, current_data, decode_event
from contracts.subjects import (EVENTS_STREAM, EVENTS_SUBJECTS, NO_EVENTS_SUBJECT,
                               category_subjects, event_subject)
from sequences import logs, metrics
from sequences.eventlog.store import Causation, StoredEvent
from sequences.tracing import context_from, tracer

log = logging.getLogger(__name__)
_tracer = tracer(__name__)


# how many times JetStream has delivered each event being handled, by event id (1 on the first
# try; events not from JetStream are on their first try)
_attempts: ContextVar[dict[uuid.UUID, int]] = ContextVar("delivery_attempts", default={})


def delivery_attempt(envelope: EventEnvelope) -> int:
    return _attempts.get().get(envelope.event_id, 1)


@dataclass(frozen=True)
class Delivery:
    """What a handler gets besides the event: its transaction and the event's envelope (in a
    rebuild, the stored event: read-model handlers append nothing, so need no causation)."""

    conn: AsyncConnection
    envelope: EventEnvelope | StoredEvent

    @property
    def causation(self) -> Causation:
        return Causation.following(self.envelope)

    @property
    def attempt(self) -> int:
        return delivery_attempt(self.envelope)


Handler = Callable[[Any, Delivery], Awaitable[None]]


@dataclass(frozen=True)
class HandBack:
    """What a batch handler returns for an event it cannot handle now (what it needs has not
    arrived, the SMTP server said "later"): JetStream brings it again after `delay` seconds
    (None: the consumer's early-retry delay), and the position in its stream does not move."""

    event_id: uuid.UUID
    delay: float | None = None


# Handles a run of consecutive events of one type at once, set-based (bulk writes, rebuilds,
# the mailer's sends): it gets the envelopes (in a rebuild, stored events: the same fields but
# the ids and trace context), their data upcast to the current schema version but not validated
# (validating a million events would cost more than the work itself), and returns the events it
# hands back, if any.
BatchHandler = Callable[[list[EventEnvelope | StoredEvent], AsyncConnection],
                        Awaitable[list[HandBack] | None]]


@dataclass
class Subscription:
    """A durable consumer: the stream categories it reads and a handler per event type.

    JetStream gives it only the types it handles: a version of a stream it skips is looked up
    in the log (one statement a batch), which tells an event of a type it does not read from an
    earlier event still on its way.
    """

    name: str
    categories: list[str]
    handlers: dict[type[Event], Handler] = field(default_factory=dict)
    batch_handlers: dict[type[Event], BatchHandler] = field(default_factory=dict)
    # one batch handler for every event type, given a batch at once (the webhooks' feed: any
    # event may be wanted, and a run of each type was one read of the webhooks: 10-30 a batch
    # of mixed events); it hands back an event with every later one of its stream
    every_type_handler: BatchHandler | None = None
    # the event types it reads as things stand (the webhooks' feed: those some webhook wants;
    # None: every type it handles), asked when its consumer starts and at `read_again`
    wanted_types: Callable[[AsyncConnection], Awaitable[set[str] | None]] | None = None
    # a read model that `sequences projections rebuild` may rebuild while the system runs
    rebuildable: bool = False
    # categories (of `categories`) whose events only this service appends, each applied by
    # `apply_in` in the transaction that appends it: the durable consumer does not read them
    # from JetStream (it would find every one already applied: a 100,000-contact import was
    # 100,000 deliveries for nothing); a rebuild still replays them from the log
    applied_at_append: tuple[str, ...] = ()
    _consumers: list = field(default_factory=list, repr=False)

    @property
    def consumed_categories(self) -> list[str]:
        """The categories the durable consumer reads from JetStream."""
        return [c for c in self.categories if c not in self.applied_at_append]

    @property
    def read_types(self) -> list[str]:
        """Names of the event types JetStream gives the durable consumer: those it handles of
        the categories it consumes (every one of them for an every-type handler)."""
        consumed = set(self.consumed_categories)
        handled = self.handled_types
        return sorted(name for name, event_type in EVENT_TYPES.items()
                      if event_type.category in consumed and name in handled)

    @property
    def filter_subjects(self) -> list[str]:
        """The durable consumer's JetStream filter: each type it reads (each category, for an
        every-type handler), so it is not given the events it would ignore."""
        if self.every_type_handler:
            return [category_subjects(c) for c in self.consumed_categories]
        return [event_subject(EVENT_TYPES[name].category, name) for name in self.read_types]

    @property
    def handled_types(self) -> set[str]:
        """Names of the event types something here handles."""
        if self.every_type_handler:
            return set(EVENT_TYPES)
        return {t.type_name() for t in (*self.handlers, *self.batch_handlers)}

    @property
    def rebuild_lock(self) -> int:
        """Advisory lock key: handlers hold it shared, a rebuild holds it exclusively."""
        return zlib.crc32(self.name.encode())

    def on(self, event_type: type[Event]):
        def register(handler: Handler) -> Handler:
            self.handlers[event_type] = handler
            return handler

        return register

    def on_batch(self, event_type: type[Event]):
        def register(handler: BatchHandler) -> BatchHandler:
            self.batch_handlers[event_type] = handler
            return handler

        return register

    def on_every_batch(self, handler: BatchHandler) -> BatchHandler:
        self.every_type_handler = handler
        return handler

    async def read_again(self, conn: AsyncConnection | None = None) -> None:
        """The types it wants changed (a webhook registered): its consumers in this process
        set their JetStream filter again, in `conn`'s transaction when given (so what changed
        them is written only once the filter reads it). Every replica's share the durable
        consumer."""
        for consumer in self._consumers:
            await consumer.ensure_consumer(conn)

    def filter_for(self, wanted: set[str] | None) -> tuple[list[str], list[str]]:
        """(filter subjects, event types read) for the types it wants now."""
        if wanted is None:
            return self.filter_subjects, self.read_types
        types = [name for name in self.read_types if name in wanted]
        return ([event_subject(EVENT_TYPES[name].category, name) for name in types]
                or [NO_EVENTS_SUBJECT], types)


class NotReady(Exception):
    """The handler needs something not yet seen (an event of another stream still on its way):
    the event comes back a moment later instead of failing."""


class Outcome(enum.Enum):
    applied = "applied"
    duplicate = "duplicate"
    early = "early"  # an earlier event of the stream has not been handled yet


_REBUILD_GATE = text("SELECT pg_advisory_xact_lock_shared(:key)")
# setting a consumer's filter, one setter at a time: the rebuild's key moved past its range
# (a crc32)
_FILTER_LOCK = text("SELECT pg_advisory_xact_lock(CAST(:key AS bigint) + 4294967296)")
_ENSURE_POSITIONS = text(
    "INSERT INTO eventlog.consumer_positions (consumer, stream_id, version)"
    " SELECT :consumer, unnest(CAST(:streams AS text[])), 0 ON CONFLICT DO NOTHING"
)
# rows locked in one order by every transaction, so concurrent batches cannot deadlock
_LOCK_POSITIONS = text(
    "SELECT stream_id, version FROM eventlog.consumer_positions"
    " WHERE consumer = :consumer AND stream_id = ANY(CAST(:streams AS text[]))"
    " ORDER BY stream_id FOR UPDATE"
)
_SET_POSITIONS = text(
    "UPDATE eventlog.consumer_positions p SET version = v.version"
    " FROM unnest(CAST(:streams AS text[]), CAST(:versions AS integer[])) AS v(stream_id, version)"
    " WHERE p.consumer = :consumer AND p.stream_id = v.stream_id"
)
# of the versions a consumer skipped in each stream (after, before), those holding no event it
# reads: types it does not read, or read only after them (`since`); a consumer with no filter
# recorded (a test's, a rebuild's) reads every type, so any skip is an event on its way
_SKIPPED_UNREAD = text(
    "SELECT v.stream_id, v.after, v.before FROM unnest(CAST(:streams AS text[]),"
    " CAST(:afters AS integer[]), CAST(:befores AS integer[])) AS v(stream_id, after, before)"
    " WHERE EXISTS (SELECT FROM eventlog.consumer_filters WHERE consumer = :consumer)"
    " AND NOT EXISTS (SELECT FROM eventlog.events e JOIN eventlog.consumer_filters f"
    "   ON f.consumer = :consumer AND f.type = e.type AND e.position > f.since"
    "   WHERE e.stream_id = v.stream_id AND e.version > v.after AND e.version < v.before)"
)
# the types a consumer reads now; a type new to it is read from the log's end (`since`), unless
# its events were given to it before (its category was in the filter, or it is a new consumer)
_RECORD_FILTER = text(
    "WITH dropped AS (DELETE FROM eventlog.consumer_filters"
    "   WHERE consumer = :consumer AND type <> ALL(CAST(:types AS text[])))"
    " INSERT INTO eventlog.consumer_filters (consumer, type, since)"
    " SELECT :consumer, t.type, CASE WHEN t.given THEN 0 ELSE"
    "   (SELECT coalesce(max(position), 0) FROM eventlog.events) END"
    " FROM unnest(CAST(:types AS text[]), CAST(:given AS boolean[])) AS t(type, given)"
    " ON CONFLICT DO NOTHING"
)
_KEEP_ERROR = text(
    "INSERT INTO eventlog.handler_errors (consumer, event_type, stream_id, error, trace_id)"
    " VALUES (:consumer, :event_type, :stream_id, :error, :trace_id)")
_FORGET_OLD_ERRORS = text(
    "DELETE FROM eventlog.handler_errors WHERE id <="
    " (SELECT id FROM eventlog.handler_errors ORDER BY id DESC OFFSET 200 LIMIT 1)")
_FORGET_POSITIONS = "DELETE FROM eventlog.consumer_positions WHERE consumer = %(consumer)s"
_INSERT_POSITIONS = (
    "INSERT INTO eventlog.consumer_positions (consumer, stream_id, version)"
    " SELECT %(consumer)s, * FROM unnest(%(streams)b::text[], %(versions)b::integer[])"
)


async def handle_once(
    engine: AsyncEngine, subscription: Subscription, envelopes: list[EventEnvelope]
) -> list[Outcome]:
    """Run the handlers for `envelopes` unless this consumer already did; one transaction."""
    async with engine.begin() as conn:
        return await apply_in(conn, subscription, envelopes)


async def apply_in(
    conn: AsyncConnection,
    subscription: Subscription,
    envelopes: list[EventEnvelope],
    gated: bool = True,
) -> list[Outcome | HandBack]:
    """Handle `envelopes` (in order) inside the caller's transaction, moving the consumer's
    position in each stream; returns what became of each.

    Used by the consumer loop, by writers that update their own read models in the same
    transaction as the append (so the API reads its own writes), and by projection rebuilds.
    """
    if gated and subscription.rebuildable:
        await conn.execute(_REBUILD_GATE, {"key": subscription.rebuild_lock})
    streams = sorted({e.stream_id for e in envelopes})
    params = {"consumer": subscription.name, "streams": streams}
    await conn.execute(_ENSURE_POSITIONS, params)
    positions = dict((await conn.execute(_LOCK_POSITIONS, params)).all())
    unread = await _skips_of_unread(conn, subscription, envelopes, positions)
    outcomes, due = [], []
    for envelope in envelopes:
        position = positions[envelope.stream_id]
        if envelope.version <= position:
            outcomes.append(Outcome.duplicate)
        elif (envelope.version > position + 1
              and (envelope.stream_id, position, envelope.version) not in unread):
            outcomes.append(Outcome.early)
        else:
            positions[envelope.stream_id] = envelope.version
            outcomes.append(Outcome.applied)
            due.append(envelope)
    handed_back = await dispatch(conn, subscription, due)
    if handed_back:
        outcomes = _with_handed_back(envelopes, outcomes, handed_back)
        for stream, (version, _) in handed_back.items():
            positions[stream] = version - 1
    moved = sorted({e.stream_id for e in due})
    if moved:
        await conn.execute(
            _SET_POSITIONS, {**params, "streams": moved, "versions": [positions[s] for s in moved]}
        )
    return outcomes


async def _skips_of_unread(conn: AsyncConnection, subscription: Subscription,
                           envelopes: list, positions: dict[str, int]) -> set[tuple]:
    """Which of the versions `envelopes` skip in their streams, (stream, after, before) as they
    would be if each event before it were applied, are only events the consumer does not read:
    one statement, and none when nothing skips (a consumer of whole categories)."""
    standing, skips = dict(positions), []
    for envelope in envelopes:
        after = standing[envelope.stream_id]
        if envelope.version > after + 1:
            skips.append((envelope.stream_id, after, envelope.version))
        standing[envelope.stream_id] = max(after, envelope.version)
    if not skips:
        return set()
    streams, afters, befores = zip(*skips)
    rows = await conn.execute(_SKIPPED_UNREAD, {
        "consumer": subscription.name, "streams": list(streams), "afters": list(afters),
        "befores": list(befores)})
    return {tuple(row) for row in rows}


def _with_handed_back(envelopes, outcomes, handed_back: dict[str, tuple[int, HandBack]]):
    """An event handed back, and the later ones of its stream, come again."""
    changed = []
    for envelope, outcome in zip(envelopes, outcomes):
        version, back = handed_back.get(envelope.stream_id, (None, None))
        if outcome is Outcome.applied and version is not None and envelope.version >= version:
            outcome = back if envelope.version == version else HandBack(envelope.event_id)
        changed.append(outcome)
    return changed


async def replace_positions(conn: AsyncConnection, subscription: Subscription,
                            positions: dict[str, int]) -> None:
    """Set the consumer's version in every stream at once (a rebuild, having replayed them):
    one statement instead of three per batch of events."""
    params = {"consumer": subscription.name, "streams": list(positions),
              "versions": list(positions.values())}
    await conn.exec_driver_sql(_FORGET_POSITIONS, params)
    await conn.exec_driver_sql(_INSERT_POSITIONS, params)


def _upcast(envelope: EventEnvelope | StoredEvent) -> EventEnvelope | StoredEvent:
    if envelope.schema_version == EVENT_TYPES[envelope.type].schema_version:
        return envelope
    if isinstance(envelope, StoredEvent):
        return envelope._replace(data=current_data(envelope))
    return envelope.model_copy(update={"data": current_data(envelope)})


async def dispatch(conn: AsyncConnection, subscription: Subscription,
                   envelopes: list[EventEnvelope] | list[StoredEvent],
                   ) -> dict[str, tuple[int, HandBack]]:
    """Run handlers in log order; a run of same-typed events goes to its batch handler at once
    (or the whole of `envelopes` to the subscription's every-type handler).
    Returns the events handed back, by stream with their version: the later events of those
    streams are not handled. Positions are the caller's business (`apply_in`, or a rebuild)."""
    batch_handlers = {t.type_name(): h for t, h in subscription.batch_handlers.items()}
    handlers = {t.type_name(): h for t, h in subscription.handlers.items()}
    handed_back: dict[str, tuple[int, HandBack]] = {}
    if subscription.every_type_handler:
        known = [envelope for envelope in envelopes if _known(subscription, envelope.type)]
        if known:
            await _run_batch(conn, subscription.every_type_handler, known, handed_back)
        return handed_back
    for type_name, run in groupby(envelopes, key=lambda envelope: envelope.type):
        run = [envelope for envelope in run if envelope.stream_id not in handed_back]
        if not run or not _known(subscription, type_name):
            continue
        if batch_handler := batch_handlers.get(type_name):
            await _run_batch(conn, batch_handler, run, handed_back)
        elif handler := handlers.get(type_name):
            for envelope in run:
                # (a rebuild's StoredEvent has no trace context)
                with logs.about(envelope.workspace_id, getattr(envelope, "traceparent", None)):
                    await handler(decode_event(envelope), Delivery(conn, envelope))
    return handed_back


def _known(subscription: Subscription, type_name: str) -> bool:
    if type_name in EVENT_TYPES:
        return True
    log.warning("%s: skipping unknown event type %s", subscription.name, type_name)
    return False


async def _run_batch(conn: AsyncConnection, handler: BatchHandler, run: list,
                     handed_back: dict[str, tuple[int, HandBack]]) -> None:
    """A batch handler on `run`, noting in `handed_back` the first event it hands back of
    each stream."""
    with logs.about(*_shared_context(run)):
        backs = await handler([_upcast(envelope) for envelope in run], conn)
    by_id = {envelope.event_id: envelope for envelope in run} if backs else {}
    for back in backs or ():
        envelope = by_id[back.event_id]
        handed_back.setdefault(envelope.stream_id, (envelope.version, back))


def waves(run: list, key=lambda envelope: envelope.stream_id) -> list[list]:
    """A batch handler's run split so each key (by default each stream) is in a wave once, in
    order: a stream's second event of a run is handled on what its first one wrote."""
    split: list[list] = []
    seen: dict = {}
    for envelope in run:
        k = key(envelope)
        wave = seen[k] = seen.get(k, -1) + 1
        if wave == len(split):
            split.append([])
        split[wave].append(envelope)
    return split


class EventConsumer:
    def __init__(
        self,
        subscription: Subscription,
        js: JetStreamContext,
        engine: AsyncEngine,
        batch_size: int = 200,
        concurrency: int = 8,
        early_retry_delay: float = 0.2,
        ack_wait: float = 10.0,
        recheck_seconds: float = 30.0,
    ):
        self.subscription = subscription
        self._js = js
        self._engine = engine
        self._batch_size = batch_size
        self._slots = asyncio.Semaphore(concurrency)
        self._early_retry_delay = early_retry_delay
        self._ack_wait = ack_wait
        # how often a subscription whose wanted types change sets its filter again (another
        # replica registered a webhook and could not set it)
        self.recheck_seconds = recheck_seconds
        subscription._consumers.append(self)

    async def ensure_consumer(self, conn: AsyncConnection | None = None) -> None:
        """The durable consumer, with the filter of what the subscription reads now (as `conn`
        sees it, or in a transaction of its own); one at a time across replicas (an advisory
        lock held to the transaction's end), so the last filter set is the latest."""
        name = self.subscription.name
        if not self.subscription.consumed_categories:  # no filter would mean every event
            raise ValueError(f"{name}: every category is applied at append; nothing to consume")
        if conn is None:
            async with self._engine.begin() as own:
                return await self.ensure_consumer(own)
        await conn.execute(_FILTER_LOCK, {"key": self.subscription.rebuild_lock})
        wanted = (await self.subscription.wanted_types(conn)
                  if self.subscription.wanted_types else None)
        subjects, types = self.subscription.filter_for(wanted)
        given = await self._set_filter(subjects)
        await conn.execute(_RECORD_FILTER, {
            "consumer": name, "types": types,
            "given": [_was_given(given, type_name) for type_name in types]})

    async def _set_filter(self, subjects: list[str]) -> list[str]:
        """Create or update the durable consumer to filter on `subjects`; returns the subjects
        it was given events of before (every one, for a new consumer)."""
        name = self.subscription.name
        config = ConsumerConfig(
            durable_name=name,
            filter_subjects=subjects,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            max_deliver=-1,
            max_ack_pending=10_000,
        )
        try:
            info = await self._js.consumer_info(EVENTS_STREAM, name)
        except NotFoundError:
            await self._js.add_consumer(EVENTS_STREAM, config)
            return [EVENTS_SUBJECTS]  # from the start of the stream
        given = list(info.config.filter_subjects or [])
        if sorted(given) != sorted(subjects):
            # it reads more types (a new version, a webhook): the durable consumer keeps its
            # position, so their events from before are not delivered (add a handler together
            # with the events that are new to it), nor waited for (`_RECORD_FILTER`)
            await self._js.add_consumer(EVENTS_STREAM, config)  # the server updates it
        return given

    async def run(self) -> None:
        await self.ensure_consumer()
        pull = await self._js.pull_subscribe_bind(
            durable=self.subscription.name, stream=EVENTS_STREAM
        )
        checked = time.monotonic()
        while True:
            if (self.subscription.wanted_types
                    and time.monotonic() - checked >= self.recheck_seconds):
                checked = time.monotonic()
                await self._recheck_filter()
            try:
                messages = await pull.fetch(self._batch_size, timeout=1.0)
            except (NatsTimeoutError, TimeoutError):
                continue
            except Exception as error:  # NATS reconnecting: keep pulling
                log.warning("%s: fetch failed (%s)", self.subscription.name, error)
                await asyncio.sleep(0.5)
                continue
            await self._handle_batch(messages)

    async def _recheck_filter(self) -> None:
        try:
            await self.ensure_consumer()
        except Exception as error:  # NATS or PostgreSQL away: next time
            log.warning("%s: could not check its filter (%s)", self.subscription.name, error)

    async def _handle_batch(self, messages: list[Msg]) -> None:
        received = [(msg, EventEnvelope.model_validate_json(msg.data)) for msg in messages]
        if await self._handle_together(received):
            return
        # a handler failed: one by one, so one bad event holds up no other
        by_stream: dict[str, list[tuple[Msg, EventEnvelope]]] = defaultdict(list)
        for msg, envelope in received:
            by_stream[envelope.stream_id].append((msg, envelope))
        await asyncio.gather(*(self._handle_in_order(items) for items in by_stream.values()))

    async def _handle_together(self, received: list[tuple[Msg, EventEnvelope]]) -> bool:
        """The whole batch in one transaction; False (nothing done) if any handler failed, and
        the batch is then handled event by event so one bad event cannot hold up the others."""
        with _tracer.start_as_current_span(
            f"consume {len(received)} events", kind=SpanKind.CONSUMER,
            attributes={"messaging.consumer": self.subscription.name},
        ):
            _attempts.set({envelope.event_id: msg.metadata.num_delivered or 1
                           for msg, envelope in received})
            try:
                outcomes = await self._while_telling_progress(
                    [msg for msg, _ in received],
                    handle_once(self._engine, self.subscription,
                                [envelope for _, envelope in received]))
            except Exception as error:
                log.debug("%s: batch failed (%s); one by one", self.subscription.name, error)
                return False
        for (msg, _), outcome in zip(received, outcomes):
            await self._settle(msg, outcome)
        self._count_handled(outcomes)
        return True

    def _count_handled(self, outcomes: list) -> None:
        handled = sum(1 for outcome in outcomes if outcome is Outcome.applied)
        if handled:
            metrics.consumed.add(handled, {"messaging.system": "nats",
                                           "messaging.consumer.group.name":
                                               self.subscription.name})

    async def _handle_in_order(self, items: list[tuple[Msg, EventEnvelope]]) -> None:
        async with self._slots:
            for msg, envelope in items:
                await self._handle(msg, envelope)

    async def _handle(self, msg: Msg, envelope: EventEnvelope) -> None:
        with _tracer.start_as_current_span(
            f"consume {envelope.type}",
            context=context_from(msg.headers or {}),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.consumer": self.subscription.name,
                "eventlog.stream_id": envelope.stream_id,
                "eventlog.version": envelope.version,
            },
        ):
            _attempts.set({envelope.event_id: msg.metadata.num_delivered or 1})
            try:
                [outcome] = await self._while_telling_progress(
                    [msg], handle_once(self._engine, self.subscription, [envelope])
                )
            except NotReady as waiting:
                log.debug("%s: %s not ready: %s", self.subscription.name, envelope.type, waiting)
                await msg.nak(delay=self._early_retry_delay)
                return
            except Exception as error:
                attempt = msg.metadata.num_delivered or 1
                log.exception(
                    "%s: %s %s v%d failed (attempt %d); will retry",
                    self.subscription.name, envelope.type, envelope.stream_id,
                    envelope.version, attempt,
                )
                await msg.nak(delay=retry_delay(attempt))
                await self._record_failure(envelope, error)
                return
            await self._settle(msg, outcome)
            self._count_handled([outcome])

    async def _record_failure(self, envelope: EventEnvelope, error: Exception) -> None:
        """Count the failure and keep it, with its trace id, for the operations page (the
        traceback itself is in the log line just written)."""
        metrics.handler_failures.add(1, {"messaging.consumer.group.name": self.subscription.name,
                                         "event.type": envelope.type})
        span = trace.get_current_span().get_span_context()
        trace_id = format(span.trace_id, "032x") if span.is_valid else _trace_id(envelope)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(_KEEP_ERROR, {
                    "consumer": self.subscription.name, "event_type": envelope.type,
                    "stream_id": envelope.stream_id,
                    "error": f"{type(error).__name__}: {error}"[:2000], "trace_id": trace_id})
                await conn.execute(_FORGET_OLD_ERRORS)
        except Exception as failure:  # the database may be what failed: the log has it
            log.debug("could not keep the handler error: %s", failure)

    async def _settle(self, msg: Msg, outcome: Outcome | HandBack) -> None:
        if isinstance(outcome, HandBack):
            await msg.nak(delay=self._early_retry_delay if outcome.delay is None
                          else outcome.delay)
            return
        if outcome is Outcome.early:
            await msg.nak(delay=self._early_retry_delay)
            return
        await msg.ack()

    async def _while_telling_progress(self, msgs: list[Msg], work: Awaitable[list]):
        """Run `work`, telling JetStream its messages are in progress while it lasts. This keeps
        ack_wait short, so a message held by a process that died is redelivered within seconds."""
        task = asyncio.ensure_future(work)
        while True:
            done, _ = await asyncio.wait({task}, timeout=self._ack_wait / 3)
            if done:
                return task.result()
            for msg in msgs:
                await msg.in_progress()


def _was_given(filter_subjects: list[str], type_name: str) -> bool:
    """Whether a consumer filtering on `filter_subjects` was given the events of a type."""
    subject = event_subject(EVENT_TYPES[type_name].category, type_name)
    return any(subject == f or (f.endswith(".>") and subject.startswith(f[:-1]))
               for f in filter_subjects)


def _trace_id(envelope: EventEnvelope) -> str | None:
    """The trace id of the event's W3C traceparent (version-traceid-spanid-flags)."""
    return logs.trace_id_of(envelope.traceparent)


def _shared_context(run: list) -> tuple:
    """The workspace and traceparent a batch's log lines are about: the events' own when they
    all share it, else none (the batch's span's trace id stays)."""
    workspaces = {envelope.workspace_id for envelope in run}
    parents = {getattr(envelope, "traceparent", None) for envelope in run}
    return (next(iter(workspaces)) if len(workspaces) == 1 else None,
            next(iter(parents)) if len(parents) == 1 else None)


def retry_delay(attempt: int) -> float:
    """Seconds before a failed event comes again: doubling from one second, up to 30."""
    return min(30.0, 0.5 * 2 ** min(attempt, 6))
