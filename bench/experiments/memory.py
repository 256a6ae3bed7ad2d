"""Does a consumer hold memory per event it handles? The `memory` benchmark saw 8-9 MB of late
growth in four services over 250,000 events; this runs one consumer in-process (the
thread-watcher's, which ignores most of what it reads) under tracemalloc and prints what grew
between two points of a long run, and the RSS.

    python -m bench.experiments.memory [--events 60000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tracemalloc
import uuid
from datetime import UTC, datetime

import psutil

from bench import common
from bench.common import BENCH_WORKSPACE
from bench.service_common import MB, fresh_events_stream, migrated_database, nats_server
from contracts.base import EventEnvelope
from contracts.events import ContactEnrolled
from contracts.subjects import EVENTS_STREAM
from sequences.db import create_engine
from sequences.messaging.consumer import EventConsumer
from sequences.messaging.nats import connect
from services.thread_watcher.app import MIGRATIONS
from services.thread_watcher.handlers import enrollment_ends


def _enrolled(i: int) -> EventEnvelope:
    event = ContactEnrolled(enrollment_id=uuid.uuid4(), sequence_id=uuid.uuid4(),
                            contact_id=uuid.uuid4(), enrolled_at=datetime.now(UTC),
                            email=f"c{i}@x.example", attempt=1)
    return EventEnvelope(event_id=uuid.uuid4(), workspace_id=BENCH_WORKSPACE,
                         stream_id=event.stream_id(), version=1, type="ContactEnrolled",
                         schema_version=1, occurred_at=datetime.now(UTC),
                         correlation_id=uuid.uuid4(), data=event.model_dump(mode="json"))


async def _publish(js, count: int) -> None:
    for start in range(0, count, 1000):
        acks = [await js.publish_async(e.nats_subject, e.model_dump_json().encode())
                for e in map(_enrolled, range(start, min(start + 1000, count)))]
        await asyncio.gather(*acks)


async def _until_handled(js, consumer: EventConsumer, count: int) -> None:
    """Until the durable consumer has every published event acknowledged."""
    while True:
        info = await js.consumer_info(EVENTS_STREAM, consumer.subscription.name)
        if info.ack_floor.stream_seq >= count:
            return
        await asyncio.sleep(0.2)


async def main(events: int) -> None:
    url = await migrated_database("memory", MIGRATIONS)
    engine = create_engine(url)
    with nats_server("memory") as server:
        nc = await connect(server.url, "bench-memory")
        js = nc.jetstream()
        await fresh_events_stream(js)
        consumer = EventConsumer(enrollment_ends, js, engine)
        running = asyncio.create_task(consumer.run())
        process = psutil.Process()
        third = events // 3
        await _publish(js, third)
        await _until_handled(js, consumer, third)
        gc.collect()
        tracemalloc.start(15)
        first, rss_first = tracemalloc.take_snapshot(), process.memory_info().rss / MB
        common.progress(f"after {third:,}: RSS {rss_first:.1f} MB")
        await _publish(js, events - third)
        await _until_handled(js, consumer, events)
        gc.collect()
        last, rss_last = tracemalloc.take_snapshot(), process.memory_info().rss / MB
        common.progress(f"after {events:,}: RSS {rss_last:.1f} MB")
        running.cancel()
        await nc.close()
    await engine.dispose()
    grown = last.compare_to(first, "traceback")
    total = sum(stat.size_diff for stat in grown)
    print(f"{events - third:,} events between the snapshots: traced memory {total / MB:+.2f} MB"
          f" ({total / (events - third):+.0f} bytes an event), RSS {rss_last - rss_first:+.1f} MB")
    for stat in grown[:8]:
        print(f"{stat.size_diff / 1024:+9.0f} KiB  {stat.count_diff:+7d} blocks")
        for line in stat.traceback.format()[-6:]:
            print("      " + line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=60_000)
    try:
        asyncio.run(main(parser.parse_args().events))
    finally:
        common.close()
