"""Append to and read from the event log.

`append` writes events of one or many streams in one statement, inside the caller's transaction,
and queues them in the outbox for the relay; `commit_append` is the same append as a transaction
of its own. A writer whose expected version is stale gets `ConcurrencyConflict`; nothing is ever
overwritten.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, AsyncIterator, Collection, NamedTuple, Sequence

import psycopg
import pydantic_core
from psycopg.pq import TransactionStatus
from psycopg.rows import RowFactory
from psycopg.types.json import set_json_loads
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts.base import Event, EventEnvelope
from sequences.clock import Clock
from sequences.tracing import TRACEPARENT, TRACESTATE, current_trace_headers, tracer

ANY_VERSION = None  # expected version meaning "append after whatever is there"

_tracer = tracer(__name__)


class ConcurrencyConflict(Exception):
    """Another writer appended to the stream first: reload and decide again."""


@dataclass(frozen=True)
class Causation:
    """Why events are appended: the workspace they belong to, the conversation (correlation) and
    the message that caused them. Events caused by an event stay in its workspace."""

    workspace_id: uuid.UUID
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None
    # the trace to continue; by default the one active when appending
    traceparent: str | None = None
    tracestate: str | None = None

    @classmethod
    def new(cls, workspace_id: uuid.UUID) -> Causation:
        return cls(workspace_id=workspace_id, correlation_id=uuid.uuid4())

    @classmethod
    def following(cls, envelope: EventEnvelope) -> Causation:
        return cls(workspace_id=envelope.workspace_id, correlation_id=envelope.correlation_id,
                   causation_id=envelope.event_id)


@dataclass(frozen=True)
class Append:
    """Events for one stream, to follow `expected_version` (or any version with ANY_VERSION)."""

    stream_id: str
    expected_version: int | None
    events: Sequence[Event]
    causation: Causation | None = None  # when it differs from the one of the whole append


def in_layers(appends: Sequence[Append]) -> list[Append]:
    """The same appends as one `Append` an event: every stream's first event, then every
    stream's second one, and so on. Many enrollments each completing their last step
    ([EnrollmentStepCompleted, EnrollmentCompleted] each) are then in the log as two runs of
    one type, which each consumer's batch handlers take a run at once, not as alternating
    types (runs of one: the pipeline's last step cost about 1.5 ms more CPU an email than the
    one before it, bench/README.md "Whole pipeline"). Each stream's events keep their order
    and versions, so the append's concurrency checks are the same; an ANY_VERSION append
    stays whole (its versions are known only when it is written)."""
    layers: list[list[Append]] = []
    for append in appends:
        if append.expected_version is ANY_VERSION:
            parts = [append]
        else:
            parts = [Append(append.stream_id, append.expected_version + i, [event],
                            append.causation) for i, event in enumerate(append.events)]
        for depth, part in enumerate(parts):
            if depth == len(layers):
                layers.append([])
            layers[depth].append(part)
    return [part for layer in layers for part in layer]


# Run on the psycopg cursor as it is. Binary placeholders (%(name)b) send the
# arrays in binary, so psycopg builds no text array literals (quoting every " of every JSON
# document in Python): twice the batched rate of text arrays. A binary COPY of rows encoded
# here did no better (bench/README.md, "Append"): the Python encoding cost what the server saved.
_INSERT = """
    WITH new AS (
        SELECT * FROM unnest(
            %(event_ids)b::uuid[], %(workspace_ids)b::uuid[], %(stream_ids)b::text[], %(versions)b::integer[],
            %(types)b::text[], %(schema_versions)b::integer[],
            %(occurred_ats)b::timestamptz[], %(correlation_ids)b::uuid[],
            %(causation_ids)s::uuid[], %(traceparents)s::text[],
            %(tracestates)s::text[], %(datas)b::text[]
        ) WITH ORDINALITY AS t(event_id, workspace_id, stream_id, version, type, schema_version, occurred_at,
                               correlation_id, causation_id, traceparent, tracestate, data, n)
    ), inserted AS (
        INSERT INTO eventlog.events (event_id, workspace_id, stream_id, version, type,
                                     schema_version, occurred_at, correlation_id, causation_id,
                                     traceparent, tracestate, data)
        SELECT event_id, workspace_id, stream_id, version, type, schema_version, occurred_at, correlation_id,
               causation_id, traceparent, tracestate, CAST(data AS jsonb)
        FROM new ORDER BY n
        RETURNING position
    )
    INSERT INTO eventlog.outbox (position) SELECT position FROM inserted
"""

# One event (a single append): the same rows by scalar parameters, which psycopg dumps in C;
# its array dumpers are Python, a third of a single append's client CPU (bench/README.md).
_INSERT_ONE = """
    WITH inserted AS (
        INSERT INTO eventlog.events (event_id, workspace_id, stream_id, version, type,
                                     schema_version, occurred_at, correlation_id, causation_id,
                                     traceparent, tracestate, data)
        VALUES (%(event_id)s, %(workspace_id)s, %(stream_id)s, %(version)s, %(type)s,
                %(schema_version)s, %(occurred_at)s, %(correlation_id)s, %(causation_id)s,
                %(traceparent)s, %(tracestate)s, CAST(%(data)s::text AS jsonb))
        RETURNING position
    )
    INSERT INTO eventlog.outbox (position) SELECT position FROM inserted
"""

# where streams begin that begin inside another stream's event (migrations/0170)
_INSERT_ORIGINS = (
    "INSERT INTO eventlog.stream_origins (stream_id, event_id)"
    " SELECT * FROM unnest(%(streams)b::text[], %(event_ids)b::uuid[])"
)
_READ_ORIGINS = (
    "SELECT stream_id, event_id FROM eventlog.stream_origins"
    " WHERE stream_id = ANY(%(streams)b::text[])"
)

_CURRENT_VERSIONS = (
    "SELECT stream_id, max(version) FROM eventlog.events"
    " WHERE stream_id = ANY(%(ids)b::text[]) GROUP BY stream_id"
)

_ENVELOPE_COLUMNS = (
    "event_id, workspace_id, stream_id, version, type, schema_version, occurred_at,"
    " correlation_id,"
    " causation_id, traceparent, tracestate, data"
)
_READ_STREAM = (
    f"SELECT {_ENVELOPE_COLUMNS} FROM eventlog.events WHERE stream_id = %(stream)s"
    " ORDER BY version"
)
_READ_STREAMS = (
    f"SELECT {_ENVELOPE_COLUMNS} FROM eventlog.events"
    " WHERE stream_id = ANY(%(streams)b::text[]) ORDER BY stream_id, version"
)
_READ_EVENTS = (
    f"SELECT {_ENVELOPE_COLUMNS} FROM eventlog.events WHERE event_id = ANY(%(ids)b::uuid[])"
)
_READ_ALL = (
    "SELECT split_part(stream_id, '-', 1), workspace_id, stream_id, version, type,"
    " schema_version, occurred_at,"
    " CASE WHEN %(all_data)s OR type = ANY(%(types_with_data)b::text[]) THEN data END"
    " FROM eventlog.events WHERE split_part(stream_id, '-', 1) = ANY(%(categories)b::text[])"
    " ORDER BY position"
)


class StoredEvent(NamedTuple):
    """An event as a rebuild replays it: what read-model handlers read of it, without its ids
    and trace context (decoding those would cost a third of the read)."""

    category: str
    workspace_id: uuid.UUID | None  # None for events logged before workspaces
    stream_id: str
    version: int
    type: str
    schema_version: int
    occurred_at: datetime
    data: dict[str, Any] | None  # None for the types the reader was told nobody reads


class EventStore:
    def __init__(self, clock: Clock):
        self._clock = clock

    async def append(
        self,
        conn: AsyncConnection,
        appends: Sequence[Append],
        causation: Causation,
    ) -> list[EventEnvelope]:
        """Append atomically to every stream in `appends`; returns the stored envelopes."""
        with _tracer.start_as_current_span("eventlog.append") as span:
            span.set_attribute("eventlog.streams", len({a.stream_id for a in appends}))
            envelopes = await self._envelopes(conn, appends, causation, current_trace_headers())
            span.set_attribute("eventlog.events", len(envelopes))
            if envelopes:
                await self._insert(conn, envelopes)
                await self._note_origins(conn, appends, envelopes)
            return envelopes

    async def commit_append(self, engine: AsyncEngine, appends: Sequence[Append],
                            causation: Causation) -> list[EventEnvelope]:
        """`append` as a transaction of its own, committed when this returns: for a writer whose
        transaction would hold nothing else (eventsourcing's `insert_events` is such a
        transaction). BEGIN, the statements and COMMIT go in one pipeline, one round trip
        where `append` in the caller's transaction takes three with the caller's COMMIT
        (psycopg waits for its own BEGIN before it sends a statement, in a pipeline too).
        An ANY_VERSION append reads its streams' versions first, in a round trip of its own:
        outside the transaction, as safe as inside (a writer in between is a conflict)."""
        with _tracer.start_as_current_span("eventlog.append") as span:
            span.set_attribute("eventlog.streams", len({a.stream_id for a in appends}))
            async with engine.connect() as conn:
                driver = (await conn.get_raw_connection()).driver_connection
                # so psycopg sends no BEGIN of its own (and waits for it): ours is pipelined
                await driver.set_autocommit(True)
                try:
                    envelopes = await self._envelopes(driver, appends, causation,
                                                      current_trace_headers())
                    span.set_attribute("eventlog.events", len(envelopes))
                    if envelopes:
                        await _commit(driver, envelopes, _origins(appends, envelopes))
                finally:
                    await _leave_autocommit(conn, driver)
            return envelopes

    async def _note_origins(self, conn: AsyncConnection, appends: Sequence[Append],
                            envelopes: list[EventEnvelope]) -> None:
        """Where the streams begin that begin inside these events (`Event.begun_streams`)."""
        if origins := _origins(appends, envelopes):
            try:
                await conn.exec_driver_sql(_INSERT_ORIGINS, origins)
            except IntegrityError as error:  # a stream begun twice: the same race as a version
                raise ConcurrencyConflict(str(error.orig)) from error

    async def _insert(self, conn: AsyncConnection, envelopes: list[EventEnvelope]) -> None:
        """The events and their outbox rows, in one statement. Not pipelined: psycopg syncs
        its BEGIN in a pipeline too, so a pipeline saved no round trip and cost CPU."""
        driver = await _driver(conn)
        try:
            async with driver.cursor() as cursor:
                await cursor.execute(*_insert_statement(envelopes))
        except psycopg.errors.IntegrityError as error:
            # the caller's transaction is now aborted: it rolls back and decides again
            raise ConcurrencyConflict(str(error)) from error

    async def _envelopes(self, conn: AsyncConnection | psycopg.AsyncConnection, appends,
                         causation, trace_headers) -> list[EventEnvelope]:
        unversioned = [a.stream_id for a in appends if a.expected_version is ANY_VERSION]
        current: dict[str, int] = {}
        if unversioned:
            current = dict(await _fetch(conn, _CURRENT_VERSIONS, {"ids": unversioned}))
        now = self._clock.now()
        envelopes = []
        for append in appends:
            base = append.expected_version
            if base is ANY_VERSION:
                base = current.get(append.stream_id, 0)
            cause = append.causation or causation
            traceparent = cause.traceparent or trace_headers.get(TRACEPARENT)
            tracestate = cause.tracestate if cause.traceparent else trace_headers.get(TRACESTATE)
            for offset, event in enumerate(append.events, start=1):
                envelopes.append(
                    EventEnvelope(
                        event_id=uuid.uuid4(),
                        workspace_id=cause.workspace_id,
                        stream_id=append.stream_id,
                        version=base + offset,
                        type=event.type_name(),
                        schema_version=event.schema_version,
                        occurred_at=now,
                        correlation_id=cause.correlation_id,
                        causation_id=cause.causation_id,
                        traceparent=traceparent,
                        tracestate=tracestate,
                        data=event.model_dump(mode="json"),
                    )
                )
        return envelopes

    async def read_stream(self, conn: AsyncConnection, stream_id: str) -> list[EventEnvelope]:
        return await _fetch(conn, _READ_STREAM, {"stream": stream_id}, _envelope)

    async def read_streams(self, conn: AsyncConnection, stream_ids: Sequence[str]
                           ) -> dict[str, list[EventEnvelope]]:
        """Several streams in one statement (an import's chunk of known contacts), by id; a
        stream with no events is absent."""
        streams: dict[str, list[EventEnvelope]] = {}
        for envelope in await _fetch(conn, _READ_STREAMS, {"streams": list(stream_ids)},
                                     _envelope):
            streams.setdefault(envelope.stream_id, []).append(envelope)
        return streams

    async def read_origins(self, conn: AsyncConnection, stream_ids: Sequence[str]
                           ) -> dict[str, EventEnvelope]:
        """The event each of these streams begins in, for those that begin inside another
        stream's event (an imported contact: its chunk's `ContactsImported`), by stream id.
        Each such event is read once, however many of the streams begin in it."""
        origins = dict(await _fetch(conn, _READ_ORIGINS, {"streams": list(stream_ids)}))
        if not origins:
            return {}
        events = {envelope.event_id: envelope for envelope in await _fetch(
            conn, _READ_EVENTS, {"ids": list(set(origins.values()))}, _envelope)}
        return {stream: events[event_id] for stream, event_id in origins.items()}

    async def read_all(
        self, conn: AsyncConnection, categories: Sequence[str], batch_size: int = 5000,
        types_with_data: Collection[str] | None = None,
    ) -> AsyncIterator[list[StoredEvent]]:
        """Events of streams of `categories` in log order, `batch_size` at a time, for
        rebuilding read models: one server-side cursor, in the caller's transaction. The data
        of events of other types than `types_with_data` (when given) is not read: parsing
        JSON is half the cost of reading.

        A cursor reads one snapshot: an event whose position commits after a higher one was
        read is not skipped, it is not seen at all (nor anything after it in its stream)."""
        driver = await _driver(conn)
        cursor = driver.cursor("eventlog_read_all", binary=True, row_factory=_stored_event)
        set_json_loads(pydantic_core.from_json, cursor)
        async with cursor:
            await cursor.execute(_READ_ALL, {
                "categories": list(categories), "all_data": types_with_data is None,
                "types_with_data": list(types_with_data or ())})
            while batch := await cursor.fetchmany(batch_size):
                yield batch


# Every read of the log goes through here: on the driver (psycopg) connection, rows in binary,
# `data` parsed by pydantic-core. Four times what SQLAlchemy rows and pydantic's model_construct
# read (bench/README.md, "Rebuild").
async def _fetch(conn: AsyncConnection | psycopg.AsyncConnection, query: str, params: dict,
                 row_factory: RowFactory | None = None) -> list:
    driver = conn if isinstance(conn, psycopg.AsyncConnection) else await _driver(conn)
    async with driver.cursor(binary=True, row_factory=row_factory) as cursor:
        set_json_loads(pydantic_core.from_json, cursor)
        await cursor.execute(query, params)
        return await cursor.fetchall()


async def _driver(conn: AsyncConnection) -> psycopg.AsyncConnection:
    """The psycopg connection under `conn`, inside `conn`'s transaction: begun here if need be,
    so SQLAlchemy ends it (commit, or rollback when the connection goes back to the pool)."""
    if not conn.in_transaction():
        await conn.begin()
    return (await conn.get_raw_connection()).driver_connection


async def _commit(driver: psycopg.AsyncConnection, envelopes: list[EventEnvelope],
                  origins: dict[str, list] | None) -> None:
    """BEGIN, the events with their outbox rows (and stream origins), COMMIT: one pipeline, on
    a connection in autocommit mode. A conflict skips the COMMIT (the server skips the rest of
    a pipeline after an error); the aborted transaction is rolled back here."""
    try:
        async with driver.pipeline(), driver.cursor() as cursor:
            await cursor.execute("BEGIN")
            await cursor.execute(*_insert_statement(envelopes))
            if origins:
                await cursor.execute(_INSERT_ORIGINS, origins)
            await cursor.execute("COMMIT")
    except psycopg.Error as error:
        if driver.info.transaction_status == TransactionStatus.INERROR:
            await driver.rollback()
        if isinstance(error, psycopg.errors.IntegrityError):  # a stream's version, or begun twice
            raise ConcurrencyConflict(str(error)) from error
        raise


async def _leave_autocommit(conn: AsyncConnection, driver: psycopg.AsyncConnection) -> None:
    """The connection goes back to the pool out of autocommit mode, or not at all (a
    transaction left open by a cancelled or broken pipeline: closing it rolls it back)."""
    try:
        await driver.set_autocommit(False)
    except psycopg.Error:
        await conn.invalidate()


def _origins(appends: Sequence[Append], envelopes: list[EventEnvelope]) -> dict[str, list] | None:
    """The streams that begin inside these events (`Event.begun_streams`), with the event's id."""
    events = (event for append in appends for event in append.events)
    streams, event_ids = [], []
    for event, envelope in zip(events, envelopes):
        for stream in event.begun_streams():
            streams.append(stream)
            event_ids.append(envelope.event_id)
    return {"streams": streams, "event_ids": event_ids} if streams else None


def _stored_event(cursor) -> Any:
    return StoredEvent._make


def _insert_statement(envelopes: list[EventEnvelope]) -> tuple[str, dict]:
    if len(envelopes) > 1:
        return _INSERT, _columns(envelopes)
    [e] = envelopes
    return _INSERT_ONE, {
        "event_id": e.event_id, "workspace_id": e.workspace_id, "stream_id": e.stream_id,
        "version": e.version, "type": e.type, "schema_version": e.schema_version,
        "occurred_at": e.occurred_at, "correlation_id": e.correlation_id,
        "causation_id": e.causation_id, "traceparent": e.traceparent,
        "tracestate": e.tracestate, "data": pydantic_core.to_json(e.data).decode()}


def _columns(envelopes: list[EventEnvelope]) -> dict[str, list]:
    return {
        "event_ids": [e.event_id for e in envelopes],
        "workspace_ids": [e.workspace_id for e in envelopes],
        "stream_ids": [e.stream_id for e in envelopes],
        "versions": [e.version for e in envelopes],
        "types": [e.type for e in envelopes],
        "schema_versions": [e.schema_version for e in envelopes],
        "occurred_ats": [e.occurred_at for e in envelopes],
        "correlation_ids": [e.correlation_id for e in envelopes],
        "causation_ids": [e.causation_id for e in envelopes],
        "traceparents": [e.traceparent for e in envelopes],
        "tracestates": [e.tracestate for e in envelopes],
        # pydantic-core's JSON encoder: the same text as json.dumps(ensure_ascii=False), faster
        "datas": [pydantic_core.to_json(e.data).decode() for e in envelopes],
    }


def _envelope(cursor) -> Any:
    names = [column.name for column in cursor.description]

    def make(values) -> EventEnvelope:
        # rows of the log were validated when appended: no need to validate them on each read
        return EventEnvelope.model_construct(**dict(zip(names, values)))

    return make
