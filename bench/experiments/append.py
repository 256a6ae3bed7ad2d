"""Changes to `EventStore.append`, one at a time, measured side by side.

    python -m bench.experiments.append [--quick]

Not part of the benchmark registry: it backs the changes to sequences/eventlog/store.py and
sequences/db.py with numbers. The first variant is the store as it was (SQLAlchemy `text()`,
text array parameters, `json.dumps`); the third is `EventStore` as it is now. Each variant is
an `EventStore` that runs its statement another way (`_insert`; same rows, returned envelopes
and `ConcurrencyConflict`, checked against the current store first), on its own fresh database, each single-append figure
with and without `pool_pre_ping` (which `create_engine` had, and no longer has). Rounds go over
every variant in turn, so a disturbance of a shared machine hits all alike; figures are medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid

import psycopg
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from bench import common
from bench.append import BATCH, chunks, make_events
from bench.common import BENCH_WORKSPACE, checkpoint, fresh_database, progress
from contracts.base import EventEnvelope
from sequences.bootstrap import EVENTLOG_MIGRATIONS
from sequences.clock import SystemClock
from sequences.db import migrate, sqlalchemy_url
from sequences.eventlog.store import (
    _INSERT,
    ANY_VERSION,
    Append,
    Causation,
    ConcurrencyConflict,
    EventStore,
    _columns,
)

_INSERT_TEXT = text(
    """
    WITH new AS (
        SELECT * FROM unnest(
            CAST(:event_ids AS uuid[]), CAST(:workspace_ids AS uuid[]), CAST(:stream_ids AS text[]),
            CAST(:versions AS integer[]), CAST(:types AS text[]),
            CAST(:schema_versions AS integer[]), CAST(:occurred_ats AS timestamptz[]),
            CAST(:correlation_ids AS uuid[]), CAST(:causation_ids AS uuid[]),
            CAST(:traceparents AS text[]), CAST(:tracestates AS text[]), CAST(:datas AS text[])
        ) WITH ORDINALITY AS t(event_id, workspace_id, stream_id, version, type, schema_version,
                               occurred_at, correlation_id, causation_id, traceparent,
                               tracestate, data, n)
    ), inserted AS (
        INSERT INTO eventlog.events (event_id, workspace_id, stream_id, version, type,
                                     schema_version, occurred_at, correlation_id, causation_id,
                                     traceparent, tracestate, data)
        SELECT event_id, workspace_id, stream_id, version, type, schema_version, occurred_at,
               correlation_id, causation_id, traceparent, tracestate, CAST(data AS jsonb)
        FROM new ORDER BY n
        RETURNING position
    )
    INSERT INTO eventlog.outbox (position) SELECT position FROM inserted
    """
)


def _json_dumps_columns(envelopes: list[EventEnvelope]) -> dict[str, list]:
    """The store's parameters, with the JSON text made by `json.dumps` as it was."""
    return {**_columns(envelopes),
            "datas": [json.dumps(e.data, ensure_ascii=False) for e in envelopes]}


# Each variant changes only how the statement is run (`EventStore._insert`).


class Before(EventStore):
    """The store as it was: SQLAlchemy text(), so psycopg builds text array literals."""

    async def _insert(self, conn, envelopes):
        try:
            await conn.execute(_INSERT_TEXT, _json_dumps_columns(envelopes))
        except IntegrityError as error:
            raise ConcurrencyConflict(str(error.orig)) from error


class BinaryParams(EventStore):
    """Binary array parameters via exec_driver_sql, the JSON still by `json.dumps`."""

    async def _insert(self, conn, envelopes):
        try:
            await conn.exec_driver_sql(_INSERT, _json_dumps_columns(envelopes))
        except IntegrityError as error:
            raise ConcurrencyConflict(str(error.orig)) from error


class DriverConnection(EventStore):
    """The store's statement and JSON (pydantic-core's `to_json`), executed on the psycopg
    connection under the caller's SQLAlchemy connection (same transaction), skipping
    SQLAlchemy's execute path (greenlet hop, result and exception wrapping)."""

    async def _insert(self, conn, envelopes):
        driver = (await conn.get_raw_connection()).driver_connection
        try:
            await driver.execute(_INSERT, _columns(envelopes))
        except psycopg.errors.UniqueViolation as error:
            raise ConcurrencyConflict(str(error)) from error


VARIANTS: dict[str, type[EventStore]] = {
    "before: text() + text arrays + json.dumps": Before,
    "+ binary params (exec_driver_sql)": BinaryParams,
    "+ binary params + to_json (EventStore as it is now)": EventStore,
    "+ binary params + to_json + driver execute": DriverConnection,
}


async def _batched(engine, store, events) -> float:
    start = time.perf_counter()
    for batch in chunks(events, BATCH):
        async with engine.begin() as conn:
            await store.append(conn, [Append(e.stream_id(), 0, [e]) for e in batch],
                               Causation.new(BENCH_WORKSPACE))
    return time.perf_counter() - start


async def _singles(engine, store, events, writers) -> float:
    async def writer(mine):
        for e in mine:
            async with engine.begin() as conn:
                await store.append(conn, [Append(e.stream_id(), 0, [e])], Causation.new(BENCH_WORKSPACE))

    start = time.perf_counter()
    await asyncio.gather(*(writer(events[i::writers]) for i in range(writers)))
    return time.perf_counter() - start


async def _same_rows(engine, store) -> None:
    """The variant stores what the current store stores, and conflicts the same way."""
    reference = EventStore(SystemClock())
    event = make_events(1)[0]
    async with engine.begin() as conn:
        ours = await store.append(conn, [Append(event.stream_id(), 0, [event])], Causation.new(BENCH_WORKSPACE))
    async with engine.connect() as conn:
        stored = await reference.read_stream(conn, event.stream_id())
        outboxed = (await conn.execute(text(
            "SELECT count(*) FROM eventlog.outbox o JOIN eventlog.events e USING (position)"
            " WHERE e.stream_id = :s"), {"s": event.stream_id()})).scalar_one()
    assert stored == ours, (stored, ours)
    assert outboxed == 1
    # causation and trace context present, two streams, two events in one of them
    first, second = make_events(2)
    cause = Causation(BENCH_WORKSPACE, uuid.uuid4(), uuid.uuid4(),
                      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "k1=v1,k2=v2")
    async with engine.begin() as conn:
        ours = await store.append(conn, [
            Append(first.stream_id(), 0, [first, first]),
            Append(second.stream_id(), ANY_VERSION, [second], Causation.new(BENCH_WORKSPACE)),
        ], cause)
    async with engine.connect() as conn:
        stored = (await reference.read_stream(conn, first.stream_id())
                  + await reference.read_stream(conn, second.stream_id()))
    assert stored == ours, (stored, ours)
    try:
        async with engine.begin() as conn:
            await store.append(conn, [Append(event.stream_id(), 0, [event])], Causation.new(BENCH_WORKSPACE))
    except ConcurrencyConflict:
        pass
    else:
        raise AssertionError("no conflict")


async def main(quick: bool) -> None:
    rounds = 2 if quick else 10
    n_batched, n_single = 10_000, 500  # per round and variant
    setups = []  # (label, engine, store, url, pre_ping)
    for name, cls in VARIANTS.items():
        for pre_ping in (True, False):
            label = name + (" [pre-ping]" if pre_ping else "")
            url = fresh_database("experiment")
            engine = create_async_engine(sqlalchemy_url(url), pool_size=10, max_overflow=10,
                                         pool_pre_ping=pre_ping)
            await migrate(engine, EVENTLOG_MIGRATIONS)
            store = cls(SystemClock())
            await _same_rows(engine, store)
            await _batched(engine, store, make_events(3 * BATCH))
            await _singles(engine, store, make_events(200), 1)
            await _singles(engine, store, make_events(200), 8)
            setups.append((label, engine, store, url, pre_ping))
    measures = (
        ("batched", n_batched, lambda e, s, ev: _batched(e, s, ev)),
        ("single x1", n_single, lambda e, s, ev: _singles(e, s, ev, 1)),
        ("single x8", n_single, lambda e, s, ev: _singles(e, s, ev, 8)),
    )
    rates: dict[tuple[str, str], list[float]] = {}
    for measure, n, run in measures:
        for r in range(rounds):
            order = setups if r % 2 == 0 else setups[::-1]
            for label, engine, store, url, pre_ping in order:
                if pre_ping and measure == "batched":
                    continue  # one checkout per 1,000 events: the ping does not matter
                events = make_events(n)
                checkpoint(url)
                rate = n / await run(engine, store, events)
                rates.setdefault((label, measure), []).append(rate)
            progress(f"{measure}: round {r + 1}/{rounds} done")
    for _, engine, *_ in setups:
        await engine.dispose()
    print(f"\n{'variant':<55} {'batched':>9} {'single x1':>10} {'single x8':>10}"
          f"  (events/s, median of {rounds} rounds)")
    for label, *_ in setups:
        cells = [f"{statistics.median(rates[label, m]):>{w},.0f}" if (label, m) in rates
                 else f"{'-':>{w}}" for (m, _, _), w in zip(measures, (9, 10, 10))]
        print(f"{label:<55} {' '.join(cells)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    try:
        asyncio.run(main(parser.parse_args().quick))
    finally:
        common.close()
