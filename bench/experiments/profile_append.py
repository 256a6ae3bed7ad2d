"""Where the time of a batched `EventStore.append` goes, stage by stage.

    python -m bench.experiments.profile_append [--cprofile]

Not a benchmark of the registry: a breakdown to decide what to change in the store. Stages:
the Python side alone (envelopes and columns), the same INSERT with the same parameters on a raw
psycopg connection, and the whole append through SQLAlchemy (with --cprofile, its profile:
before the store sent binary parameters, psycopg's text array dumper, a re.sub per JSON
document, was the largest cost; bench/experiments/append.py keeps that version as `Before`).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
import uuid

import psycopg

from bench import common
from bench.append import BATCH, Ours, chunks, make_events
from bench.common import connect_params, fresh_database
from sequences.eventlog import store as store_module
from sequences.eventlog.store import Append, Causation
from bench.common import BENCH_WORKSPACE


def rate(n, seconds):
    return f"{n / seconds:>10,.0f} events/s  ({seconds / n * 1e6:7.1f} us/event)"


async def main(cprofile: bool) -> None:
    n = 20_000
    url = fresh_database("profile")
    ours = Ours(url)
    await ours.setup()
    await ours.append_batch(make_events(BATCH))  # warm-up

    # 1. Python side only: envelopes and columns, no database
    events = make_events(n)
    t0 = time.perf_counter()
    all_columns = []
    for batch in chunks(events, BATCH):
        appends = [Append(e.stream_id(), 0, [e]) for e in batch]
        envelopes = await ours.store._envelopes(None, appends, Causation.new(BENCH_WORKSPACE), {})
        all_columns.append(store_module._columns(envelopes))
    t1 = time.perf_counter()
    print("python: _envelopes + _columns           ", rate(n, t1 - t0))

    # 2. the INSERT with the same parameters, raw psycopg (sync), one transaction per batch
    sql = store_module._INSERT  # psycopg placeholders since the store executes it on psycopg
    with psycopg.connect(**connect_params(url)) as conn:
        for cols in all_columns[:1]:
            cols = dict(cols, event_ids=[uuid.uuid4() for _ in cols["event_ids"]],
                        stream_ids=[f"x-{uuid.uuid4()}" for _ in cols["stream_ids"]])
            conn.execute(sql, cols)
            conn.commit()
        common.checkpoint(url)
        t0 = time.perf_counter()
        for cols in all_columns:
            conn.execute(sql, cols)
            conn.commit()
        t1 = time.perf_counter()
    print("db: same INSERT via raw psycopg         ", rate(n, t1 - t0))

    # 3. the whole append through SQLAlchemy
    events = make_events(n)
    common.checkpoint(url)
    profiler = cProfile.Profile() if cprofile else None
    t0 = time.perf_counter()
    if profiler:
        profiler.enable()
    for batch in chunks(events, BATCH):
        await ours.append_batch(batch)
    if profiler:
        profiler.disable()
    t1 = time.perf_counter()
    print("full: EventStore.append via SQLAlchemy  ", rate(n, t1 - t0))
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(35)
    await ours.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--cprofile", action="store_true")
    try:
        asyncio.run(main(parser.parse_args().cprofile))
    finally:
        common.close()
