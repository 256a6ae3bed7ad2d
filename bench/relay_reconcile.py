"""The relay's reconcile after nats-server lost its unsynced tail (issue: nothing lost when the
machine dies). A log of 1,000,000 events (100,000 with --quick) in PostgreSQL, the last 100,000
(20,000) of them remembered as published (`eventlog.published_recently`, what five minutes of
publishing leave) and missing from the stream, as a power cut leaves it:

* the check when nothing was lost (the stream is level): seconds, once the log is that long;
* the reconcile that publishes the lost tail again, in log order with the same ids: seconds for
  the whole log (target under a minute) and events/s against a raw baseline in the same run:
  `publish_async` of the same envelopes, already serialised, to the same server.

    python -m bench --only relay_reconcile [--quick]
"""

from __future__ import annotations

import asyncio
import time

import nats
import psycopg
from psycopg.rows import dict_row

from bench import common
from bench.common import Result
from bench.service_common import fresh_events_stream, migrated_database, nats_server
from contracts.subjects import EVENTS_STREAM
from sequences.db import libpq_url
from sequences.eventlog.relay import Relay
from sequences.messaging.nats import MSG_ID

_FILL = """
    INSERT INTO eventlog.events (stream_id, version, event_id, workspace_id, type, schema_version,
                                 occurred_at, correlation_id, data)
    SELECT 'contact-' || id, 1, id, %(workspace)s, 'ContactCreated', 1, now(), id,
           jsonb_build_object('contact_id', id, 'name', '김민수', 'email', 'kim@example.com')
    FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, %(n)s)) AS g
"""
_REMEMBER_TAIL = """
    INSERT INTO eventlog.published_recently (position, stream_seq)
    SELECT position, row_number() OVER (ORDER BY position)
    FROM (SELECT position FROM eventlog.events ORDER BY position DESC LIMIT %s) AS tail
"""


async def run(quick: bool) -> list[Result]:
    log_size, lost = (100_000, 20_000) if quick else (1_000_000, 100_000)
    url = await migrated_database("relay_reconcile")
    common.progress(f"relay_reconcile: a log of {log_size:,} events, the last {lost:,} lost")
    with nats_server("relay_reconcile") as server:
        async with await psycopg.AsyncConnection.connect(
                libpq_url(url), autocommit=True, row_factory=dict_row) as conn:
            await conn.execute(_FILL, {"workspace": common.BENCH_WORKSPACE, "n": log_size})
            await conn.execute(_REMEMBER_TAIL, [lost])
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            await fresh_events_stream(js)
            raw = await _raw_publish(conn, js, lost)
            await fresh_events_stream(js)  # empty again: the tail is what the cut took
            await conn.execute("DELETE FROM eventlog.relay_stream")
            relay = Relay(url, js)
            started = time.perf_counter()
            republished = await relay.reconcile(conn)
            reconcile = time.perf_counter() - started
            assert republished == lost, (republished, lost)
            started = time.perf_counter()
            assert await relay.reconcile(conn) == 0
            level = time.perf_counter() - started
            await nc.close()
    details = {"log_events": log_size, "lost_events": lost}
    return [
        Result(f"reconcile of a {log_size:,}-event log, {lost:,} lost: whole", reconcile, "s",
               target="< 60 s", passed=reconcile < 60, details=details),
        Result.compare("republishing the lost tail", lost / reconcile, "events/s", raw,
                       "publish_async of the same envelopes, serialised beforehand",
                       details=details),  # the relay's own cost per event (validate, dump)
        Result(f"reconcile of a {log_size:,}-event log, nothing lost", level, "s",
               target="< 60 s", passed=level < 60, details=details),
    ]


async def _raw_publish(conn, js, n: int) -> float:
    """events/s of publishing the remembered events' envelopes as they are in the log."""
    rows = await (await conn.execute(
        "SELECT e.event_id, e.type, e.stream_id, e.data::text AS data FROM eventlog.events e"
        " JOIN eventlog.published_recently p USING (position) ORDER BY position")).fetchall()
    messages = [(f"seq.events.contact.{r['type']}", r["data"].encode(), str(r["event_id"]))
                for r in rows]
    started = time.perf_counter()
    for start in range(0, n, 1000):
        acks = [await js.publish_async(subject, body, headers={MSG_ID: msg_id})
                for subject, body, msg_id in messages[start:start + 1000]]
        await asyncio.gather(*acks)
    elapsed = time.perf_counter() - started
    info = await js.stream_info(EVENTS_STREAM)
    assert info.state.messages == n
    return n / elapsed
