"""Anatomy of one single append: what the transaction around it costs, layer by layer. The
question it answers (open, issue 18): how close a single append is to the floor of one commit,
against the targets of 1x eventsourcing's rate with one writer and 1.5x with 8.

    python -m bench.experiments.single_floor [--quick]

Sequential, one event to a new stream per transaction, with EventStore's INSERT of small
appends (the same rows as EventStore.append). It shows how much of a single
append is the caller's transaction machinery rather than the store, and the fastest a Python
client of this machine gets, against which a target of 5x eventsourcing can be judged.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from datetime import UTC, datetime

import psycopg
from sqlalchemy.ext.asyncio import create_async_engine

from bench import common
from bench.append import make_events
from bench.common import BENCH_WORKSPACE, checkpoint, connect_params, fresh_database, progress
from sequences.bootstrap import EVENTLOG_MIGRATIONS
from sequences.db import create_engine, migrate, sqlalchemy_url
from sequences.clock import SystemClock
from sequences.eventlog.store import _INSERT as _INSERT_BINARY
from sequences.eventlog.store import Append, Causation, EventStore


def params(event) -> dict:
    return {
        "event_ids": [uuid.uuid4()], "workspace_ids": [BENCH_WORKSPACE], "stream_ids": [event.stream_id()], "versions": [1],
        "types": ["ContactCreated"], "schema_versions": [1], "occurred_ats": [datetime.now(UTC)],
        "correlation_ids": [uuid.uuid4()], "causation_ids": [None], "traceparents": [None],
        "tracestates": [None], "datas": [json.dumps(event.model_dump(mode="json"))],
    }


async def main(quick: bool) -> None:
    n, rounds = (1_000, 2) if quick else (5_000, 3)
    url = fresh_database("single")
    engine = create_engine(url)
    await migrate(engine, EVENTLOG_MIGRATIONS)
    bare = create_async_engine(sqlalchemy_url(url), pool_size=10, max_overflow=10)
    sync_conn = psycopg.connect(**connect_params(url))
    async_conn = await psycopg.AsyncConnection.connect(**connect_params(url))

    async def sa(eng, event, insert):
        async with eng.begin() as conn:
            if insert:
                await conn.exec_driver_sql(_INSERT_BINARY, params(event))
            else:
                await conn.exec_driver_sql("SELECT 1")

    async def raw_async(event):
        async with async_conn.transaction():
            await async_conn.execute(_INSERT_BINARY, params(event))

    async def raw_async_pipeline(event):
        # psycopg waits for its own BEGIN in a pipeline too: two round trips, not one
        async with async_conn.pipeline(), async_conn.transaction():
            await async_conn.execute(_INSERT_BINARY, params(event))

    async def raw_sync(event):
        with sync_conn.transaction():
            sync_conn.execute(_INSERT_BINARY, params(event))

    async def raw_sync_pipeline(event):
        with sync_conn.pipeline(), sync_conn.transaction():
            sync_conn.execute(_INSERT_BINARY, params(event))

    store = EventStore(SystemClock())

    async def store_in_transaction(event):
        async with engine.begin() as conn:
            await store.append(conn, [Append(event.stream_id(), 0, [event])],
                               Causation.new(BENCH_WORKSPACE))

    async def store_commit_append(event):
        await store.commit_append(engine, [Append(event.stream_id(), 0, [event])],
                                  Causation.new(BENCH_WORKSPACE))

    cases = {
        "EventStore.append in engine.begin() (3 round trips)": store_in_transaction,
        "EventStore.commit_append (1 round trip)": store_commit_append,
        "SQLAlchemy engine.begin() + SELECT 1 (pre-ping on)": lambda e: sa(engine, e, False),
        "SQLAlchemy engine.begin() + SELECT 1 (no pre-ping)": lambda e: sa(bare, e, False),
        "SQLAlchemy engine.begin() + INSERT (pre-ping on)": lambda e: sa(engine, e, True),
        "SQLAlchemy engine.begin() + INSERT (no pre-ping)": lambda e: sa(bare, e, True),
        "psycopg async: BEGIN, INSERT, COMMIT": raw_async,
        "psycopg async pipeline: BEGIN+INSERT+COMMIT": raw_async_pipeline,
        "psycopg sync: BEGIN, INSERT, COMMIT": raw_sync,
        "psycopg sync pipeline: BEGIN+INSERT+COMMIT": raw_sync_pipeline,
    }
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for name, case in cases.items():  # warm-up (and prepared statements)
        for event in make_events(100):
            await case(event)
    for r in range(rounds):
        for name, case in cases.items():
            events = make_events(n)
            checkpoint(url)
            start, cpu = time.perf_counter(), time.process_time()
            for event in events:
                await case(event)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            rates[name].append(n / wall)
            progress(f"{name}: {n / wall:,.0f}/s, {wall / n * 1e6:.0f} us wall,"
                     f" {cpu / n * 1e6:.0f} us client CPU per append")
    sync_conn.close()
    await async_conn.close()
    await engine.dispose()
    await bare.dispose()
    print(f"\n{'sequential single appends':<55} {'events/s':>9}  (median of {rounds})")
    for name in cases:
        print(f"{name:<55} {statistics.median(rates[name]):>9,.0f}")


if __name__ == "__main__":
    common.run_experiment(main, __doc__)
