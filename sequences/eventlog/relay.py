"""The relay: puts every committed event on JetStream, in stream order, exactly once in effect.

It reads the outbox (events committed, not yet acknowledged by JetStream), publishes them in
position order with `Nats-Msg-Id` = event id, and deletes outbox rows only once JetStream has
acknowledged them. Dying anywhere in between re-publishes on restart, and JetStream drops the
duplicates by id. One relay is active at a time (a PostgreSQL advisory lock, held by the
connection it works on), so the order of each stream is kept with any number of replicas.

JetStream acknowledges before it fsyncs (every `sync_interval`, two minutes by default), so a
machine that dies can take acknowledged events with it. The relay therefore remembers what it
published, with the stream sequence each event got, for `keep_seconds` (longer than the sync
interval), and reconciles: when the stream's last sequence is behind the highest it was given
(checked when it becomes active, every `check_interval` while idle, and whenever a fresh
acknowledgement reuses a sequence it had already been given), or when the stream has gaps (a
server restarted from a state file newer than its blocks keeps its last sequence and marks what
it lost as deleted), it publishes again, in log order and with the same `Nats-Msg-Id`, every
remembered event past that point or in a gap. Consumers treat the
repeats as no-ops (their positions).
"""

from __future__ import annotations

import asyncio
import json
import logging

import psycopg
import time

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import StreamInfo
from psycopg.rows import dict_row

from contracts.subjects import EVENTS_STREAM, EVENTS_SUBJECTS, event_subject
from sequences.db import libpq_url
from sequences.faults import crash_point
from sequences.messaging.nats import MSG_ID
from sequences.tracing import TRACEPARENT, TRACESTATE, context_from, tracer

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

_LEADER_LOCK = 0x5E9_0002
# what the relay publishes of an event: the envelope's JSON (EventEnvelope's fields) written
# by PostgreSQL, not parsed into the model and dumped again (a third of the relay's CPU); the
# time in UTC whatever the connection's time zone, as RFC 3339 with a Z as pydantic writes it
_PUBLISHED = """
    e.position, e.event_id, e.stream_id, e.type, e.traceparent, e.tracestate,
    json_build_object(
        'event_id', e.event_id, 'workspace_id', e.workspace_id, 'stream_id', e.stream_id,
        'version', e.version, 'type', e.type, 'schema_version', e.schema_version,
        'occurred_at', to_char(e.occurred_at AT TIME ZONE 'UTC',
                              'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'correlation_id', e.correlation_id,
        'causation_id', e.causation_id, 'traceparent', e.traceparent,
        'tracestate', e.tracestate, 'data', e.data)::text AS envelope
"""
_BATCH = f"""
    SELECT {_PUBLISHED}
    FROM eventlog.outbox o JOIN eventlog.events e ON e.position = o.position
    ORDER BY o.position LIMIT %s
"""
# published: out of the outbox, remembered with the sequence JetStream gave each event. Another
# event remembered at one of those sequences was there before a lost tail was written over: it
# is lost too, whatever the stream's last sequence says later, so it is marked (sequence 0)
_MARK_PUBLISHED = """
    WITH published AS (
        DELETE FROM eventlog.outbox o USING unnest(%(positions)s::bigint[]) AS p(position)
        WHERE o.position = p.position RETURNING o.position
    ), written_over AS (
        UPDATE eventlog.published_recently SET stream_seq = 0
        WHERE stream_seq = ANY(%(seqs)s::bigint[]) AND position <> ALL(%(positions)s::bigint[])
        RETURNING position
    )
    INSERT INTO eventlog.published_recently (position, stream_seq)
    SELECT v.position, v.seq FROM unnest(%(positions)s::bigint[], %(seqs)s::bigint[])
        AS v(position, seq)
    ON CONFLICT (position) DO UPDATE SET stream_seq = EXCLUDED.stream_seq, published_at = now()
"""
# past `after`, at a sequence the stream no longer holds (a gap a restored store left), or
# written over
_REMEMBERED_LOST = """
    SELECT position FROM eventlog.published_recently
    WHERE (stream_seq > %(after)s OR stream_seq = ANY(%(gaps)s::bigint[]) OR stream_seq = 0)
      AND position <> ALL(%(but)s::bigint[])
    ORDER BY position
"""
_EVENTS_AT = f"""
    SELECT {_PUBLISHED} FROM eventlog.events e
    WHERE e.position = ANY(%s::bigint[]) ORDER BY e.position
"""
# the whole log from a position on (adopting a new stream)
_LOG_FROM = f"""
    SELECT {_PUBLISHED} FROM eventlog.events e
    WHERE e.position > %s ORDER BY e.position LIMIT %s
"""
_FORGET_OLD = """
    DELETE FROM eventlog.published_recently WHERE published_at < now() - %s * interval '1 second'
"""


class StreamNotOurs(Exception):
    """The events stream is not the one the relay has been publishing to (deleted and created
    again, or holding other subjects): publishing stops, the outbox is kept, until an operator
    decides (`sequences relay adopt-stream`)."""


class Relay:
    def __init__(
        self,
        database_url: str,
        js: JetStreamContext,
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        ack_timeout: float = 10.0,
        keep_seconds: float = 300.0,
        check_interval: float = 5.0,
    ):
        self._conninfo = libpq_url(database_url)
        self._js = js
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._ack_timeout = ack_timeout
        self._keep_seconds = keep_seconds  # longer than nats-server's sync_interval (2 min)
        self._check_interval = check_interval
        self._checked_at = 0.0
        self._highest_seq = 0  # the highest stream sequence JetStream gave what we remember
        self.published = 0
        self.republished = 0
        self.active = False  # holds the leader lock: the one relay whose outbox figures count

    async def run(self) -> None:
        """Relay until cancelled, surviving PostgreSQL and NATS outages."""
        while True:
            try:
                await self._run_connected()
            except StreamNotOurs as refusal:
                log.error("relay stopped: %s", refusal)
                await asyncio.sleep(max(self._poll_interval, 10.0))
            except (psycopg.OperationalError, NatsError, TimeoutError) as error:
                log.warning("relay interrupted (%s: %s); the outbox is kept, retrying",
                            type(error).__name__, error)
                await asyncio.sleep(self._poll_interval)

    async def _run_connected(self) -> None:
        async with await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, row_factory=dict_row
        ) as conn:
            await conn.execute("LISTEN eventlog_outbox")
            while not await self._take_leadership(conn):
                await asyncio.sleep(self._poll_interval)
            log.info("relay active")
            self.active = True
            try:
                self._highest_seq = 0  # read again: another relay may have published meanwhile
                await self.reconcile(conn)
                while True:
                    if await self.relay_batch(conn) < self._batch_size:
                        await self._wait_for_appends(conn)
                        if time.monotonic() - self._checked_at >= self._check_interval:
                            await self.reconcile(conn)
            finally:
                self.active = False

    @staticmethod
    async def _take_leadership(conn: psycopg.AsyncConnection) -> bool:
        cursor = await conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", [_LEADER_LOCK])
        row = await cursor.fetchone()
        return bool(row and row["ok"])

    async def _wait_for_appends(self, conn: psycopg.AsyncConnection) -> None:
        async for _ in conn.notifies(timeout=self._poll_interval, stop_after=1):
            pass

    async def relay_batch(self, conn: psycopg.AsyncConnection) -> int:
        """Publish up to one batch from the outbox; returns how many events it published."""
        cursor = await conn.execute(_BATCH, [self._batch_size])
        rows = await cursor.fetchall()
        if not rows:
            return 0
        crash_point("relay.before_publish")
        acks = await self._publish_all(rows)
        crash_point("relay.after_publish")
        positions = [r["position"] for r in rows]
        await self._remember(conn, positions, acks)
        self.published += len(rows)
        fresh = [ack.seq for ack in acks if not ack.duplicate]
        if fresh and min(fresh) <= self._highest_seq:
            # a sequence given out again: the stream lost its tail (a restart after a crash of
            # the machine) and we are already writing over it
            await self._republish_lost(conn, after=min(fresh) - 1, but=positions)
        self._highest_seq = max(self._highest_seq, *(ack.seq for ack in acks))
        return len(rows)

    async def reconcile(self, conn: psycopg.AsyncConnection) -> int:
        """Publish again what JetStream acknowledged and no longer has; returns how many. Also
        forgets what is surely on disk by now (older than `keep_seconds`)."""
        self._checked_at = time.monotonic()
        info = await self._js.stream_info(EVENTS_STREAM)
        await self._check_stream_is_ours(conn, info)
        await conn.execute(_FORGET_OLD, [self._keep_seconds])
        if not self._highest_seq:
            cursor = await conn.execute(
                "SELECT coalesce(max(stream_seq), 0) AS seq FROM eventlog.published_recently")
            self._highest_seq = (await cursor.fetchone())["seq"]
        gaps = await self._gaps(info)
        if (info.state.last_seq >= self._highest_seq and not gaps
                and not await _written_over(conn)):
            return 0
        return await self._republish_lost(conn, after=info.state.last_seq, gaps=gaps)

    async def _gaps(self, info: StreamInfo) -> list[int]:
        """The sequences missing inside the stream. The relay never deletes, so a gap is what a
        server lost and still counted: restarted from a stream state file newer than its message
        blocks (killed again soon after a power cut), it keeps its last sequence and marks the
        lost messages deleted. Asked only when the stream says it has some (rare)."""
        if not info.state.num_deleted:
            return []
        # nats-py's stream_info cannot ask for the deleted sequences themselves
        response = await self._js._api_request(  # noqa: SLF001
            f"{self._js._prefix}.STREAM.INFO.{EVENTS_STREAM}",
            json.dumps({"deleted_details": True}).encode(), timeout=self._ack_timeout)
        return list(StreamInfo.from_response(response).state.deleted or [])

    async def _republish_lost(self, conn: psycopg.AsyncConnection, after: int,
                              but: list[int] = (), gaps: list[int] = ()) -> int:
        """Publish again, in log order, every remembered event JetStream had put past `after` or
        at one of the `gaps` in the stream.
        A server that restored a torn store can say a last sequence it then gives out again:
        a fresh acknowledgement at or below `after` moves it back, and the remembered events
        between are published again too."""
        done, republished = set(but), 0
        while True:
            cursor = await conn.execute(_REMEMBERED_LOST, {"after": after, "gaps": list(gaps),
                                                           "but": list(done)})
            lost = [row["position"] for row in await cursor.fetchall()]
            if not lost:
                break
            log.warning("JetStream no longer has %d events it acknowledged (its last sequence"
                        " is %d with %d gaps, it had given %d): publishing them again", len(lost),
                        after, len(gaps), self._highest_seq)
            for start in range(0, len(lost), self._batch_size):
                chunk = lost[start:start + self._batch_size]
                rows = await (await conn.execute(_EVENTS_AT, [chunk])).fetchall()
                acks = await self._publish_all(rows)
                await self._remember(conn, [r["position"] for r in rows], acks)
                self._highest_seq = max(self._highest_seq, *(ack.seq for ack in acks))
                fresh = [ack.seq for ack in acks if not ack.duplicate]
                if fresh and min(fresh) <= after:
                    after = min(fresh) - 1
            done.update(lost)
            republished += len(lost)
        self.republished += republished
        return republished

    async def adopt_stream(self, conn: psycopg.AsyncConnection) -> int:
        """Make the events stream as it is now the relay's, publishing the whole log to it in
        order (what it still has is dropped as a duplicate within its window; consumers skip
        what they have handled). For an operator who recreated the stream."""
        info = await self._js.stream_info(EVENTS_STREAM)
        _check_subjects(info)
        after, published = 0, 0
        while True:
            rows = await (await conn.execute(_LOG_FROM, [after, self._batch_size])).fetchall()
            if not rows:
                break
            acks = await self._publish_all(rows)
            await self._remember(conn, [r["position"] for r in rows], acks)
            after, published = rows[-1]["position"], published + len(rows)
        await conn.execute(
            "INSERT INTO eventlog.relay_stream (stream, created_at) VALUES (%s, %s)"
            " ON CONFLICT (stream) DO UPDATE SET created_at = EXCLUDED.created_at",
            [EVENTS_STREAM, info.created])
        return published

    async def _check_stream_is_ours(self, conn: psycopg.AsyncConnection, info: StreamInfo) -> None:
        _check_subjects(info)
        if info.created is None:  # a server too old to say when: nothing to compare
            return
        cursor = await conn.execute(
            "INSERT INTO eventlog.relay_stream (stream, created_at) VALUES (%s, %s)"
            " ON CONFLICT (stream) DO UPDATE SET stream = EXCLUDED.stream RETURNING created_at",
            [EVENTS_STREAM, info.created])
        known = (await cursor.fetchone())["created_at"]
        if known != info.created:
            raise StreamNotOurs(
                f"the JetStream stream {EVENTS_STREAM} was created again at {info.created}"
                f" (the relay published to the one created at {known}), so it holds none of the"
                " older events. Nothing is published and the outbox is kept until an operator"
                " runs `sequences relay adopt-stream` (publishes the whole log to it in order).")

    async def _publish_all(self, rows: list[dict]) -> list:
        with _tracer.start_as_current_span("eventlog.relay") as span:
            span.set_attribute("eventlog.events", len(rows))
            acks = [await self._publish(row) for row in rows]
            return await asyncio.wait_for(asyncio.gather(*acks), self._ack_timeout)

    @staticmethod
    async def _remember(conn: psycopg.AsyncConnection, positions: list[int], acks: list) -> None:
        await conn.execute(_MARK_PUBLISHED, {"positions": positions,
                                             "seqs": [ack.seq for ack in acks]})

    async def _publish(self, row: dict) -> asyncio.Future:
        headers = {MSG_ID: str(row["event_id"])}
        if row["traceparent"]:
            headers[TRACEPARENT] = row["traceparent"]
        if row["tracestate"]:
            headers[TRACESTATE] = row["tracestate"]
        subject = event_subject(row["stream_id"].split("-", 1)[0], row["type"])
        # a publish span per event, child of the append that wrote it
        with _tracer.start_as_current_span(f"publish {row['type']}", context=context_from(headers)):
            return await self._js.publish_async(subject, row["envelope"].encode(),
                                                headers=headers)



async def _written_over(conn: psycopg.AsyncConnection) -> bool:
    """Whether an event is remembered as written over (by a relay that then died before
    publishing it again)."""
    cursor = await conn.execute(
        "SELECT EXISTS (SELECT FROM eventlog.published_recently WHERE stream_seq = 0) AS lost")
    return (await cursor.fetchone())["lost"]


def _check_subjects(info: StreamInfo) -> None:
    subjects = list(info.config.subjects or [])
    if subjects != [EVENTS_SUBJECTS]:
        raise StreamNotOurs(
            f"the JetStream stream {EVENTS_STREAM} takes the subjects {subjects}, not only"
            f" {EVENTS_SUBJECTS}: another publisher's messages would hide a lost tail. Nothing is"
            " published and the outbox is kept until the stream takes only the events' subjects.")
