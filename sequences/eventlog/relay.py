"""The relay: puts every committed event on JetStream, in stream order, exactly once in effect.

It reads the outbox (events committed, not yet acknowledged by JetStream), publishes them in
position order with `Nats-Msg-Id` = event id, and deletes outbox rows only once JetStream has
acknowledged them. Dying anywhere in between re-publishes on restart, and JetStream drops the
duplicates by id. One relay is active at a time (a PostgreSQL advisory lock, held by the
connection it works on), so the order of each stream is kept with any number of replicas.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from psycopg.rows import dict_row

from contracts.base import EventEnvelope
from sequences.db import libpq_url
from sequences.faults import crash_point
from sequences.messaging.nats import MSG_ID
from sequences.tracing import TRACEPARENT, TRACESTATE, context_from, tracer

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

_LEADER_LOCK = 0x5E9_0002
_BATCH = """
    SELECT o.position, e.event_id, e.workspace_id, e.stream_id, e.version, e.type, e.schema_version,
           e.occurred_at, e.correlation_id, e.causation_id, e.traceparent, e.tracestate, e.data
    FROM eventlog.outbox o JOIN eventlog.events e ON e.position = o.position
    ORDER BY o.position LIMIT %s
"""


class Relay:
    def __init__(
        self,
        database_url: str,
        js: JetStreamContext,
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        ack_timeout: float = 10.0,
    ):
        self._conninfo = libpq_url(database_url)
        self._js = js
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._ack_timeout = ack_timeout
        self.published = 0

    async def run(self) -> None:
        """Relay until cancelled, surviving PostgreSQL and NATS outages."""
        while True:
            try:
                await self._run_connected()
            except (psycopg.OperationalError, NatsError, TimeoutError) as error:
                log.warning("relay interrupted (%s); retrying", error)
                await asyncio.sleep(self._poll_interval)

    async def _run_connected(self) -> None:
        async with await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, row_factory=dict_row
        ) as conn:
            await conn.execute("LISTEN eventlog_outbox")
            while not await self._take_leadership(conn):
                await asyncio.sleep(self._poll_interval)
            log.info("relay active")
            while True:
                if await self.relay_batch(conn) < self._batch_size:
                    await self._wait_for_appends(conn)

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
        with _tracer.start_as_current_span("eventlog.relay") as span:
            span.set_attribute("eventlog.events", len(rows))
            acks = [await self._publish(row) for row in rows]
            await asyncio.wait_for(asyncio.gather(*acks), self._ack_timeout)
        crash_point("relay.after_publish")
        await conn.execute(
            "DELETE FROM eventlog.outbox WHERE position = ANY(%s)", [[r["position"] for r in rows]]
        )
        self.published += len(rows)
        return len(rows)

    async def _publish(self, row: dict) -> asyncio.Future:
        envelope = EventEnvelope.model_validate({k: v for k, v in row.items() if k != "position"})
        headers = {MSG_ID: str(envelope.event_id)}
        if envelope.traceparent:
            headers[TRACEPARENT] = envelope.traceparent
        if envelope.tracestate:
            headers[TRACESTATE] = envelope.tracestate
        # a publish span per event, child of the append that wrote it
        with _tracer.start_as_current_span(
            f"publish {envelope.type}", context=context_from(headers)
        ):
            return await self._js.publish_async(
                envelope.nats_subject, envelope.model_dump_json().encode(), headers=headers
            )

