"""Append throughput of the event log against the `eventsourcing` library, on one PostgreSQL.

The targets (issue 18): batched appends at least 0.6x of a raw COPY of the same rows into the
same tables (`Copy`: `eventlog.events` with its keys, `eventlog.outbox` with its trigger) in the
same run; single appends at least eventsourcing's rate with 1 writer and 1.5x with 8 (both
sides are one fsync per commit). Batched against eventsourcing and against a COPY into a bare
table (`BareCopy`) are reference rows without a target.

Both sides start from the same `ContactCreated` models (built before timing) and pay for their
own serialisation inside the timed section: ours in `EventStore.append` (envelope + JSON), theirs
turning each event into a `StoredEvent` (`model_dump` + `json.dumps`, as a pydantic-based
eventsourcing application would). Each side gets its own fresh database; every section is
warmed up first and a CHECKPOINT runs before each timed round. Every figure is timed in short
rounds (full: 10 of 10,000 batched / 500 single events per side; --quick: 2) that alternate which
side goes first, and is the median round; every round and the round-by-round ratios are in the
JSON. On a shared machine a disturbance then spoils a few rounds of both sides, not the whole
run of one.

eventsourcing runs with its defaults: `PostgresApplicationRecorder` (table `stored_events`,
uuid originator ids, no DB functions: one pipelined transaction of SET LOCAL lock_timeout,
LOCK TABLE ... IN EXCLUSIVE MODE, NOTIFY, INSERT ... unnest(composite[]) RETURNING
notification_id) on a `PostgresDatastore` sized like its `PostgresFactory` defaults (pool 5,
overflow 10).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Sequence

import psycopg
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

from bench.common import Result, Ticker, checkpoint, connect_params, fresh_database, progress
from contracts.events import ContactCreated
from sequences.bootstrap import EVENTLOG_MIGRATIONS
from sequences.clock import SystemClock
from sequences.db import create_engine, migrate
from sequences.eventlog.store import Append, Causation, EventStore
from bench.common import BENCH_WORKSPACE

THEIRS = "eventsourcing"
COPY_TARGET = 0.6  # batched: of a raw COPY of the same rows into the same tables
SINGLE_TARGETS = {1: 1.0, 8: 1.5}  # single appends: of eventsourcing's rate, by writers
WRITERS = 8
BATCH = 1_000  # events per transaction, each to its own new stream
TOPIC = f"{ContactCreated.__module__}:{ContactCreated.__qualname__}"


def make_events(n: int) -> list[ContactCreated]:
    """Events to append, moved out of the garbage collector's sight (`gc.freeze`): a service
    does not hold 100,000 events in memory, and a cyclic collection walking them all would
    charge whichever side allocates more per event for the benchmark's own working set."""
    events = [
        ContactCreated(contact_id=uuid.uuid4(), name=f"Kim Minsu {i}", company="Acme Korea",
                       email=f"contact{i}@example.com")
        for i in range(n)
    ]
    gc.collect()
    gc.freeze()
    return events


def chunks(items: Sequence, size: int) -> list[Sequence]:
    return [items[i:i + size] for i in range(0, len(items), size)]


# --- ours --------------------------------------------------------------------------------------


class Ours:
    def __init__(self, url: str):
        self.url = url
        self.engine = create_engine(url)  # what the services use
        self.store = EventStore(SystemClock())

    async def setup(self) -> None:
        await migrate(self.engine, EVENTLOG_MIGRATIONS)

    async def append_batch(self, events: Sequence[ContactCreated]) -> None:
        async with self.engine.begin() as conn:
            await self.store.append(
                conn, [Append(e.stream_id(), 0, [e]) for e in events], Causation.new(BENCH_WORKSPACE)
            )

    async def append_one(self, event: ContactCreated) -> None:
        # a transaction holding nothing but the append, like eventsourcing's insert_events
        await self.store.commit_append(self.engine, [Append(event.stream_id(), 0, [event])],
                                       Causation.new(BENCH_WORKSPACE))

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


# --- raw COPY ---------------------------------------------------------------------------------

_COPY_LOG = ("COPY eventlog.events (position, event_id, workspace_id, stream_id, version, type,"
             " schema_version, occurred_at, correlation_id, causation_id, traceparent, tracestate,"
             " data) FROM STDIN (FORMAT BINARY)")
_COPY_LOG_TYPES = ["int8", "uuid", "uuid", "text", "int4", "text", "int4", "timestamptz", "uuid",
                   "uuid", "text", "text", "jsonb"]
_COPY_OUTBOX = "COPY eventlog.outbox (position) FROM STDIN (FORMAT BINARY)"

_BARE = """
CREATE TABLE bare_events (
    stream_id text, version integer, event_id uuid, type text, schema_version integer,
    occurred_at timestamptz, recorded_at timestamptz DEFAULT now(), correlation_id uuid,
    causation_id uuid, traceparent text, tracestate text, data jsonb
)
"""
_COPY_BARE = ("COPY bare_events (event_id, stream_id, version, type, schema_version,"
              " occurred_at, correlation_id, causation_id, traceparent, tracestate, data)"
              " FROM STDIN (FORMAT BINARY)")
_COPY_BARE_TYPES = ["uuid", "text", "int4", "text", "int4", "timestamptz", "uuid", "uuid",
                    "text", "text", "jsonb"]


class Copy:
    """The rows an append writes, by psycopg's binary COPY (`write_row`, JSON by psycopg), into
    the same tables: `eventlog.events` with its keys and constraints and `eventlog.outbox` (with
    its NOTIFY trigger), one transaction a batch. The baseline of the 0.6x target. Positions
    come from a counter of its own: nobody else writes to its database."""

    def __init__(self, url: str):
        self.url = url
        self.conn = psycopg.connect(**connect_params(url), autocommit=True)
        self.positions = itertools.count(1)

    async def setup(self) -> None:
        engine = create_engine(self.url)
        await migrate(engine, EVENTLOG_MIGRATIONS)
        await engine.dispose()

    def append_batch(self, batch: Sequence[ContactCreated]) -> None:
        now, correlation = datetime.now(UTC), uuid.uuid4()
        positions = [next(self.positions) for _ in batch]
        with self.conn.transaction(), self.conn.cursor() as cursor:
            with cursor.copy(_COPY_LOG) as copy:
                copy.set_types(_COPY_LOG_TYPES)
                for position, e in zip(positions, batch):
                    copy.write_row((position, uuid.uuid4(), BENCH_WORKSPACE, e.stream_id(), 1,
                                    "ContactCreated", 1, now, correlation, None, None, None,
                                    e.model_dump(mode="json")))
            with cursor.copy(_COPY_OUTBOX) as copy:
                copy.set_types(["int8"])
                for position in positions:
                    copy.write_row((position,))

    def close(self) -> None:
        self.conn.close()


class BareCopy(Copy):
    """The same COPY of the events into a table without keys, indexes or outbox: a reference
    for how much of a COPY the table's keys are, no target."""

    async def setup(self) -> None:
        self.conn.execute(_BARE)

    def append_batch(self, batch: Sequence[ContactCreated]) -> None:
        now, correlation = datetime.now(UTC), uuid.uuid4()
        with self.conn.transaction(), self.conn.cursor().copy(_COPY_BARE) as copy:
            copy.set_types(_COPY_BARE_TYPES)
            for e in batch:
                copy.write_row((uuid.uuid4(), e.stream_id(), 1, "ContactCreated", 1, now,
                                correlation, None, None, None, e.model_dump(mode="json")))


def copy_batched(copy: Copy, events, label: str) -> float:
    ticker = Ticker(label, len(events))
    start = time.perf_counter()
    done = 0
    for batch in chunks(events, BATCH):
        copy.append_batch(batch)
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


class Rounds:
    """Events/s of one figure over several rounds; the median is the figure."""

    def __init__(self, name: str):
        self.name, self.rates, self.latencies = name, [], []

    def add(self, n: int, seconds: float, latencies: list[float] | None = None) -> None:
        self.rates.append(n / seconds)
        self.latencies += latencies or []

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    def details(self) -> dict:
        return {"median": round(self.rate), "rounds": [round(r) for r in self.rates],
                **_latency(self.latencies)}


def _paired(ours: Rounds, theirs: Rounds) -> dict:
    """Round-by-round ratios: each pair ran back to back, so it shares the machine's state."""
    ratios = [o / t for o, t in zip(ours.rates, theirs.rates)]
    return {"ratio_per_round": [round(r, 2) for r in ratios],
            "median_ratio_per_round": round(statistics.median(ratios), 2)}


async def run(quick: bool) -> list[Result]:
    """Each figure is timed in `rounds` short rounds (of total / rounds events per side) that
    alternate which side goes first; a figure is the median round. On a shared machine a
    disturbance (another process's I/O, a checkpoint) then spoils a few rounds of both sides
    instead of the whole run of one."""
    n_batched = 20_000 if quick else 100_000
    n_single = 1_000 if quick else 5_000
    rounds = 2 if quick else 10
    warm_batched, warm_single = 3 * BATCH, 200

    progress("append: creating databases (ours, eventsourcing, COPY, bare COPY)")
    urls = {side: fresh_database(side) for side in ("ours", "eventsourcing", "copy", "bare")}
    ours = Ours(urls["ours"])
    await ours.setup()
    theirs = Theirs(urls["eventsourcing"])
    theirs.setup()
    copy, bare = Copy(urls["copy"]), BareCopy(urls["bare"])
    await copy.setup()
    await bare.setup()
    results: list[Result] = []

    async def batched(side: str, events) -> float:
        checkpoint(urls[side])
        if side == "ours":
            return await ours_batched(ours, events, side)
        if side == "eventsourcing":
            return theirs_batched(theirs, events, side)
        return copy_batched(copy if side == "copy" else bare, events, side)

    try:
        # a. batched: BATCH events over BATCH new streams per transaction
        label = f"batched: {BATCH:,} events over {BATCH:,} streams per txn"
        per_round = n_batched // rounds
        progress(f"append {label}: {rounds} rounds x {per_round:,} events per side")
        sides = list(urls)
        for side in sides:
            await batched(side, make_events(warm_batched))
        figures = {side: Rounds(side) for side in sides}
        for r in range(rounds):
            for side in sides if r % 2 == 0 else sides[::-1]:
                figures[side].add(per_round, await batched(side, make_events(per_round)))
            progress(f"  round {r + 1}/{rounds}: " + ", ".join(
                f"{side} {figures[side].rates[-1]:,.0f}" for side in sides) + " events/s")
        ours_b, copy_b = figures["ours"], figures["copy"]
        results.append(Result.compare(
            f"{label}: ours vs raw COPY of the same rows into the same tables", ours_b.rate,
            "events/s", copy_b.rate, "psycopg COPY", COPY_TARGET,
            {"ours": ours_b.details(), "copy": copy_b.details(), **_paired(ours_b, copy_b),
             "events_per_side": n_batched, "events_per_round": per_round}))
        for side, name in (("eventsourcing", THEIRS), ("bare", "COPY into a bare table")):
            results.append(Result.compare(
                f"{label}: ours vs {name}", ours_b.rate, "events/s", figures[side].rate, name,
                None, {side: figures[side].details(), **_paired(ours_b, figures[side]),
                       "events_per_side": n_batched}))

        # b. single appends: one event to its own new stream per transaction
        for writers in (1, WRITERS):
            label = f"single appends, {writers} writer{'s' if writers > 1 else ''}"
            kind = "asyncio tasks / threads" if writers > 1 else "sequential"
            per_round = n_single // rounds
            progress(f"append {label} ({kind}): {rounds} rounds x {per_round:,} events per side")
            await ours_singles(ours, make_events(warm_single), writers, "ours warm-up")
            theirs_singles(theirs, make_events(warm_single), writers, "eventsourcing warm-up")
            ours_s, theirs_s = Rounds("ours"), Rounds("eventsourcing")
            for r in range(rounds):
                for side in ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours"):
                    events = make_events(per_round)
                    if side == "ours":
                        checkpoint(urls["ours"])
                        ours_s.add(per_round, *await ours_singles(ours, events, writers, "ours"))
                    else:
                        checkpoint(urls["eventsourcing"])
                        theirs_s.add(per_round, *theirs_singles(theirs, events, writers,
                                                                "eventsourcing"))
                progress(f"  round {r + 1}/{rounds}: ours {ours_s.rates[-1]:,.0f}, eventsourcing"
                         f" {theirs_s.rates[-1]:,.0f} events/s")
            results.append(Result.compare(
                f"{label} (1 event, 1 txn each)", ours_s.rate, "events/s", theirs_s.rate,
                THEIRS, SINGLE_TARGETS[writers],
                {"ours": ours_s.details(), "theirs": theirs_s.details(),
                 **_paired(ours_s, theirs_s), "events_per_side": n_single,
                 "events_per_round": per_round}))
    finally:
        await ours.close()
        theirs.close()
        copy.close()
        bare.close()
    return results
