"""Single appends against eventsourcing, interleaved in chunks of a few appends: the append
benchmark's rounds (500 events a side, one to three seconds) are longer than the disturbances
of a shared disk (other processes' fsyncs), which then fall on one side of a round and not the
other; its round-by-round ratios went from 0.2x to 3x at load 6. Here each side appends one
chunk (20 events with 1 writer, 80 with 8) in turn, so a disturbance falls on both alike, and
a side's rate is its events over its own summed time.

    python -m bench.experiments.single_paired [--quick]

Sides: `EventStore.commit_append` (what the benchmark times), `EventStore.append` in the
caller's `engine.begin()` (what services do when the append shares its transaction), and
eventsourcing's `insert_events`, each on its own database of the same server, as in
bench/append.py. Prints events/s and client CPU per append of each side, and the ratios.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from bench import common
from bench.append import WRITERS, Ours, Theirs, make_events
from bench.common import BENCH_WORKSPACE, checkpoint, fresh_database, progress
from sequences.eventlog.store import Append, Causation


class Side:
    def __init__(self, name: str):
        self.name, self.events, self.seconds, self.cpu = name, 0, 0.0, 0.0

    def add(self, n: int, seconds: float, cpu: float) -> None:
        self.events += n
        self.seconds += seconds
        self.cpu += cpu

    @property
    def rate(self) -> float:
        return self.events / self.seconds


async def main(quick: bool) -> None:
    chunks = 25 if quick else 100
    urls = {name: fresh_database(name.split()[0]) for name in ("commit", "in_txn", "theirs")}
    commit, in_txn = Ours(urls["commit"]), Ours(urls["in_txn"])
    await commit.setup()
    await in_txn.setup()
    theirs = Theirs(urls["theirs"])
    theirs.setup()

    async def in_transaction(event):
        async with in_txn.engine.begin() as conn:
            await in_txn.store.append(conn, [Append(event.stream_id(), 0, [event])],
                                      Causation.new(BENCH_WORKSPACE))

    async def writers(append, events, n):
        async def writer(mine):
            for event in mine:
                await append(event)
        await asyncio.gather(*(writer(events[i::n]) for i in range(n)))

    pool = ThreadPoolExecutor(WRITERS)  # theirs' writers: threads, as in bench/append.py

    def theirs_writers(events, n):
        if n == 1:
            for event in events:
                theirs.append_one(event)
            return
        for future in [pool.submit(lambda mine=events[i::n]: [theirs.append_one(e) for e in mine])
                       for i in range(n)]:
            future.result()

    try:
        for n in (1, WRITERS):
            size = 20 if n == 1 else 10 * n
            sides = {"commit_append": Side("commit_append"), "append in engine.begin()":
                     Side("append in engine.begin()"), "eventsourcing": Side("eventsourcing")}
            runs = {
                "commit_append": lambda ev: writers(commit.append_one, ev, n),
                "append in engine.begin()": lambda ev: writers(in_transaction, ev, n),
            }
            for name in sides:  # warm-up
                events = make_events(100)
                if name == "eventsourcing":
                    theirs_writers(events, n)
                else:
                    await runs[name](events)
            for url in urls.values():
                checkpoint(url)
            order = list(sides)
            for c in range(chunks):
                for name in order if c % 2 == 0 else order[::-1]:
                    events = make_events(size)
                    start, cpu = time.perf_counter(), time.process_time()
                    if name == "eventsourcing":
                        theirs_writers(events, n)
                    else:
                        await runs[name](events)
                    sides[name].add(size, time.perf_counter() - start, time.process_time() - cpu)
            theirs_rate = sides["eventsourcing"].rate
            print(f"\n{n} writer(s), {chunks} chunks of {size} events a side, interleaved")
            for side in sides.values():
                print(f"  {side.name:<28} {side.rate:>7,.0f} events/s"
                      f"  {side.cpu / side.events * 1e6:>6,.0f} us client CPU/append"
                      f"  {side.rate / theirs_rate:.2f}x eventsourcing")
            progress(f"{n} writer(s) done")
    finally:
        await commit.close()
        await in_txn.close()
        theirs.close()
        pool.shutdown()


if __name__ == "__main__":
    common.run_experiment(main, __doc__)
