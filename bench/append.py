"""Append throughput of the event log against the `eventsourcing` library, on one PostgreSQL.

The issue's target: append throughput (events/s, batched across many streams, and single
appends) at least 5x eventsourcing's events/s. So every ours-vs-eventsourcing row carries the
target ">= 5x"; the raw COPY row is a reference ceiling without one.

Both sides start from the same `ContactCreated` models (built before timing) and pay for their
own serialisation inside the timed section: ours in `EventStore.append` (envelope + JSON), theirs
turning each event into a `StoredEvent` (`model_dump` + `json.dumps`, as a pydantic-based
eventsourcing application would). Each side gets its own fresh database; a CHECKPOINT runs
before every timed section and every section is warmed up first.

eventsourcing runs with its defaults: `PostgresApplicationRecorder` (table `stored_events`,
uuid originator ids, no DB functions: one pipelined transaction of SET LOCAL lock_timeout,
LOCK TABLE ... IN EXCLUSIVE MODE, NOTIFY, INSERT ... unnest(composite[]) RETURNING
notification_id) on a `PostgresDatastore` sized like its `PostgresFactory` defaults (pool 5,
overflow 10).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Callable, Sequence

import psycopg
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

from bench.common import Result, Ticker, checkpoint, connect_params, fresh_database, progress
from contracts.events import ContactCreated
from sequences.bootstrap import EVENTLOG_MIGRATIONS
from sequences.clock import SystemClock
from sequences.db import create_engine, migrate
from sequences.eventlog.store import Append, Causation, EventStore

THEIRS = "eventsourcing"
TARGET = 5.0
WRITERS = 8
BATCH = 1_000  # events per transaction, each to its own new stream
TOPIC = f"{ContactCreated.__module__}:{ContactCreated.__qualname__}"


def make_events(n: int) -> list[ContactCreated]:
    return [
        ContactCreated(contact_id=uuid.uuid4(), name=f"Kim Minsu {i}", company="Acme Korea",
                       email=f"contact{i}@example.com")
        for i in range(n)
    ]


def chunks(items: Sequence, size: int) -> list[Sequence]:
    return [items[i:i + size] for i in range(0, len(items), size)]


# --- ours --------------------------------------------------------------------------------------


class Ours:
    def __init__(self, url: str):
        self.url = url
        self.engine = create_engine(url)  # the service defaults: pool 10 + 10, pre-ping
        self.store = EventStore(SystemClock())

    async def setup(self) -> None:
        await migrate(self.engine, EVENTLOG_MIGRATIONS)

    async def append_batch(self, events: Sequence[ContactCreated]) -> None:
        async with self.engine.begin() as conn:
            await self.store.append(
                conn, [Append(e.stream_id(), 0, [e]) for e in events], Causation.new()
            )

    async def append_one(self, event: ContactCreated) -> None:
        async with self.engine.begin() as conn:
            await self.store.append(conn, [Append(event.stream_id(), 0, [event])], Causation.new())

    async def close(self) -> None:
        await self.engine.dispose()


async def ours_batched(ours: Ours, events, label: str) -> float:
    ticker = Ticker(label, len(events))
    start = time.perf_counter()
    done = 0
    for batch in chunks(events, BATCH):
        await ours.append_batch(batch)
        done += len(batch)
        ticker.tick(done)
    return time.perf_counter() - start


async def ours_singles(ours: Ours, events, writers: int, label: str) -> tuple[float, list[float]]:
    ticker = Ticker(label, len(events))
    counter = itertools.count(1)
    latencies: list[float] = []

    async def writer(mine):
        for event in mine:
            t0 = time.perf_counter()
            await ours.append_one(event)
            latencies.append(time.perf_counter() - t0)
            ticker.tick(next(counter))

    start = time.perf_counter()
    await asyncio.gather(*(writer(events[i::writers]) for i in range(writers)))
    return time.perf_counter() - start, latencies


# --- eventsourcing -----------------------------------------------------------------------------


class Theirs:
    def __init__(self, url: str):
        p = connect_params(url)
        self.datastore = PostgresDatastore(
            dbname=p["dbname"], host=p.get("host", "localhost"), port=p.get("port", 5432),
            user=p.get("user", "postgres"), password=p.get("password", ""),
            pool_size=5, max_overflow=10,  # what PostgresFactory uses unless told otherwise
        )
        self.recorder = PostgresApplicationRecorder(self.datastore)

    def setup(self) -> None:
        self.recorder.create_table()

    @staticmethod
    def stored(event: ContactCreated) -> StoredEvent:
        return StoredEvent(
            originator_id=event.contact_id,
            originator_version=1,
            topic=TOPIC,
            state=json.dumps(event.model_dump(mode="json"), ensure_ascii=False).encode(),
        )

    def append_batch(self, events: Sequence[ContactCreated]) -> None:
        self.recorder.insert_events([self.stored(e) for e in events])

    def append_one(self, event: ContactCreated) -> None:
        self.recorder.insert_events([self.stored(event)])

    def close(self) -> None:
        self.datastore.close()


def theirs_batched(theirs: Theirs, events, label: str) -> float:
    ticker = Ticker(label, len(events))
    start = time.perf_counter()
    done = 0
    for batch in chunks(events, BATCH):
        theirs.append_batch(batch)
        done += len(batch)
        ticker.tick(done)
    return time.perf_counter() - start


def theirs_singles(theirs: Theirs, events, writers: int, label: str) -> tuple[float, list[float]]:
    ticker = Ticker(label, len(events))
    counter = itertools.count(1)
    latencies: list[float] = []
    lock = threading.Lock()

    def writer(mine):
        own = []
        for event in mine:
            t0 = time.perf_counter()
            theirs.append_one(event)
            own.append(time.perf_counter() - t0)
            ticker.tick(next(counter))
        with lock:
            latencies.extend(own)

    start = time.perf_counter()
    if writers == 1:
        writer(events)
    else:
        with ThreadPoolExecutor(writers) as pool:
            for future in [pool.submit(writer, events[i::writers]) for i in range(writers)]:
                future.result()
    return time.perf_counter() - start, latencies


# --- raw COPY ceiling --------------------------------------------------------------------------

_BARE = """
CREATE TABLE bare_events (
    stream_id text, version integer, event_id uuid, type text, schema_version integer,
    occurred_at timestamptz, recorded_at timestamptz DEFAULT now(), correlation_id uuid,
    causation_id uuid, traceparent text, tracestate text, data jsonb
)
"""
_COPY = ("COPY bare_events (event_id, stream_id, version, type, schema_version, occurred_at,"
         " correlation_id, causation_id, traceparent, tracestate, data) FROM STDIN (FORMAT BINARY)")
_COPY_TYPES = ["uuid", "text", "int4", "text", "int4", "timestamptz", "uuid", "uuid", "text",
               "text", "jsonb"]


def copy_batched(url: str, events, label: str, warmup) -> float:
    """The same rows as our event log gets (no keys, indexes or outbox), by binary COPY."""
    with psycopg.connect(**connect_params(url)) as conn:
        conn.execute(_BARE)
        conn.commit()

        def copy_batch(batch):
            now, correlation = datetime.now(UTC), uuid.uuid4()
            with conn.transaction(), conn.cursor().copy(_COPY) as copy:
                copy.set_types(_COPY_TYPES)
                for e in batch:
                    copy.write_row((uuid.uuid4(), e.stream_id(), 1, "ContactCreated", 1, now,
                                    correlation, None, None, None, e.model_dump(mode="json")))

        conn.autocommit = True  # conn.transaction() then is the whole transaction
        for batch in chunks(warmup, BATCH):
            copy_batch(batch)
        checkpoint(url)
        ticker = Ticker(label, len(events))
        start = time.perf_counter()
        done = 0
        for batch in chunks(events, BATCH):
            copy_batch(batch)
            done += len(batch)
            ticker.tick(done)
        return time.perf_counter() - start


# --- the benchmark -----------------------------------------------------------------------------


def _latency(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {}
    q = statistics.quantiles(latencies, n=100)
    return {"p50_ms": round(q[49] * 1000, 3), "p99_ms": round(q[98] * 1000, 3),
            "max_ms": round(max(latencies) * 1000, 3)}


async def run(quick: bool) -> list[Result]:
    n_batched = 20_000 if quick else 100_000
    n_single = 1_000 if quick else 5_000
    warm_batched, warm_single = 3 * BATCH, 200

    progress("append: creating databases (ours, eventsourcing, COPY)")
    ours_url, theirs_url = fresh_database("ours"), fresh_database("eventsourcing")
    copy_url = fresh_database("copy")

    ours = Ours(ours_url)
    await ours.setup()
    theirs = Theirs(theirs_url)
    theirs.setup()
    results: list[Result] = []
    measured: dict[str, dict] = {}

    def record(name: str, n: int, seconds: float, latencies: list[float] | None = None) -> float:
        rate = n / seconds
        measured[name] = {"events": n, "seconds": round(seconds, 4), **_latency(latencies or [])}
        progress(f"  {name}: {n:,} events in {seconds:.2f}s = {rate:,.0f} events/s")
        return rate

    try:
        # a. batched: BATCH events over BATCH new streams per transaction
        label = f"batched ({BATCH:,} events over {BATCH:,} streams per txn)"
        progress(f"append {label}: {n_batched:,} events")
        await ours_batched(ours, make_events(warm_batched), "ours warm-up")
        checkpoint(ours_url)
        ours_b = record("ours batched", n_batched,
                        await ours_batched(ours, make_events(n_batched), "ours batched"))
        theirs_batched(theirs, make_events(warm_batched), "eventsourcing warm-up")
        checkpoint(theirs_url)
        theirs_b = record("eventsourcing batched", n_batched,
                          theirs_batched(theirs, make_events(n_batched), "eventsourcing batched"))
        copy_b = record("COPY batched", n_batched,
                        copy_batched(copy_url, make_events(n_batched), "COPY batched",
                                     make_events(warm_batched)))
        results.append(Result.compare(f"append {label}", ours_b, "events/s", theirs_b, THEIRS,
                                      TARGET, {"ours": measured["ours batched"],
                                               "theirs": measured["eventsourcing batched"]}))
        results.append(Result.compare(
            f"append {label}: ours vs raw COPY (ceiling)", ours_b, "events/s", copy_b,
            "psycopg COPY", None, {"copy": measured["COPY batched"]}))

        # b. single appends: one event to its own new stream per transaction
        for writers in (1, WRITERS):
            label = f"single appends, {writers} writer{'s' if writers > 1 else ''}"
            kind = "asyncio tasks / threads" if writers > 1 else "sequential"
            progress(f"append {label} ({kind}): {n_single:,} events")
            await ours_singles(ours, make_events(warm_single), writers, "ours warm-up")
            checkpoint(ours_url)
            seconds, lat = await ours_singles(ours, make_events(n_single), writers, f"ours {label}")
            ours_s = record(f"ours {label}", n_single, seconds, lat)
            theirs_singles(theirs, make_events(warm_single), writers, "eventsourcing warm-up")
            checkpoint(theirs_url)
            seconds, lat = theirs_singles(theirs, make_events(n_single), writers,
                                          f"eventsourcing {label}")
            theirs_s = record(f"eventsourcing {label}", n_single, seconds, lat)
            results.append(Result.compare(
                f"append {label} (1 event, 1 txn each)", ours_s, "events/s", theirs_s, THEIRS,
                TARGET, {"ours": measured[f"ours {label}"],
                         "theirs": measured[f"eventsourcing {label}"]}))
    finally:
        await ours.close()
        theirs.close()
    return results
