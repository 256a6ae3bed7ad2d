"""Read models (projections): tables fed from the log, rebuildable from scratch.

A projection is a `Subscription` marked rebuildable plus the tables it writes. Rebuilding
empties the tables and replays the log through the very same handlers, then sets the
projection's positions, in one transaction, so readers see the old tables or the new ones,
never half.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass
from typing import AsyncIterator, Callable, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sequences.eventlog.store import EventStore, StoredEvent
from sequences.messaging.consumer import Subscription, dispatch, replace_positions

log = logging.getLogger(__name__)


# Streams of a category only refer to streams of categories before it (an enrollment to its
# sequence and contact, a schedule to its enrollment, ...).
_CATEGORY_ORDER = {category: rank for rank, category in enumerate(
    ("sequence", "contact", "enrollment", "schedule", "delivery", "inbox", "bounce", "task"))}


def _replay_order(envelope: StoredEvent) -> tuple:
    """Replay a batch in long runs of one event type, so set-based handlers do the work in a few
    statements: by category (what others refer to first), then version, then type. Each
    stream's events keep their order (versions ascend), and read-model rows of different
    streams of one category do not depend on each other."""
    return (_CATEGORY_ORDER.get(envelope.category, len(_CATEGORY_ORDER)), envelope.version,
            envelope.type)


@dataclass(frozen=True)
class Projection:
    subscription: Subscription
    tables: tuple[str, ...]


async def rebuild(
    engine: AsyncEngine,
    store: EventStore,
    projection: Projection,
    batch_size: int = 5000,
    progress: Callable[[int], None] = lambda n: None,
) -> int:
    """Rebuild one projection from the log; returns how many events it replayed."""
    subscription = projection.subscription
    replayed = 0
    async with engine.begin() as conn:
        # live handlers of this projection hold the same key shared: wait for them, hold them off
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": subscription.rebuild_lock}
        )
        await conn.execute(text(f"TRUNCATE {', '.join(projection.tables)}"))
        positions: dict[str, int] = {}  # the version reached in each stream, written at the end
        # The log is read on a second connection, a batch ahead, so that reading and decoding
        # the next batch overlaps the server's work on this one. Its snapshot is taken after
        # the lock: events committed later wait for the live handlers, which wait for us.
        async with engine.connect() as reading:
            batches = store.read_all(reading, subscription.categories, batch_size)
            async for batch in _read_ahead(batches):
                _advance(positions, batch)
                await dispatch(conn, subscription, sorted(batch, key=_replay_order))
                replayed += len(batch)
                progress(replayed)
        await replace_positions(conn, subscription, positions)
    log.info("rebuilt %s from %d events", subscription.name, replayed)
    return replayed


async def read_models(engine: AsyncEngine, projections: tuple[Projection, ...]) -> dict[str, list]:
    """Every row of the projections' tables, each table in a stable order (by the whole row):
    what a rebuild must give again, row for row."""
    tables: dict[str, list] = {}
    async with engine.connect() as conn:
        for table in (t for projection in projections for t in projection.tables):
            rows = await conn.execute(text(f"SELECT * FROM {table} AS r ORDER BY r"))
            tables[table] = [tuple(row) for row in rows]
    return tables


def differences(live: dict[str, list], rebuilt: dict[str, list]) -> dict[str, dict[str, int]]:
    """Per table whose rows differ: how many rows only the live tables have, and only the
    rebuilt ones (empty when a rebuild reproduced every row)."""
    differ = {}
    for table in sorted(live.keys() | rebuilt.keys()):
        # rows hold lists and dicts (arrays, jsonb): compared by their repr
        before = Counter(map(repr, live.get(table, [])))
        after = Counter(map(repr, rebuilt.get(table, [])))
        if before != after:
            differ[table] = {"only_live": (before - after).total(),
                             "only_rebuilt": (after - before).total()}
    return differ


T = TypeVar("T")


async def _read_ahead(items: AsyncIterator[T], depth: int = 2) -> AsyncIterator[T]:
    """`items`, fetched by a task of their own up to `depth` ahead of the consumer."""
    queue: asyncio.Queue = asyncio.Queue(depth)
    done = object()

    async def fetch() -> None:
        try:
            async for item in items:
                await queue.put(item)
        except Exception as error:
            await queue.put(error)
        else:
            await queue.put(done)

    fetching = asyncio.create_task(fetch())
    try:
        while (item := await queue.get()) is not done:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        fetching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fetching


def _advance(positions: dict[str, int], batch: list[StoredEvent]) -> None:
    """Move each stream's position over `batch`, which must follow it without a gap."""
    for event in batch:
        if event.version != positions.get(event.stream_id, 0) + 1:
            raise RuntimeError("the log has a gap or a repeat: rebuild stopped, nothing changed")
        positions[event.stream_id] = event.version
