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
from typing import AsyncIterator, Awaitable, Callable, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sequences.eventlog.store import EventStore, StoredEvent
from sequences.messaging.consumer import Subscription, dispatch, replace_positions

log = logging.getLogger(__name__)


# Streams of a category only refer to streams of categories before it (an enrollment to its
# sequence and contact, a schedule to its enrollment, ...).
_CATEGORY_ORDER = {category: rank for rank, category in enumerate(
    ("sequence", "contact", "enrollment", "schedule", "delivery", "inbox", "bounce", "task"))}
# imported contacts are contacts: replayed with them, in log order
_CATEGORY_ORDER["import"] = _CATEGORY_ORDER["contact"]


def _in_replay_order(batch: list[StoredEvent]) -> list[StoredEvent]:
    """A batch in long runs of one event type, so set-based handlers do the work in a few
    statements: by category (what others refer to first), then version, then type. Each
    stream's events keep their order (versions ascend), and read-model rows of different
    streams of one category do not depend on each other; except contacts: one live contact per
    address, so a contact deleted (or given another email) and a new one with its address must
    come in log order. Contacts (and the chunks of imported ones) keep the batch's order (an
    import is one long run anyway)."""
    last = len(_CATEGORY_ORDER)

    def key(e: StoredEvent):
        if e.category in ("contact", "import"):
            return (_CATEGORY_ORDER["contact"], 0, "")  # (sorted() is stable: log order)
        return (_CATEGORY_ORDER.get(e.category, last), e.version, e.type)

    return sorted(batch, key=key)


@dataclass(frozen=True)
class Projection:
    subscription: Subscription
    tables: tuple[str, ...]
    # Indexes (schema.name) that no handler reads, only the API: a rebuild drops them and makes
    # them again at its end rather than updating them at every write. An index a handler finds
    # rows by must not be here: without it, that handler would scan the whole table.
    unread_indexes: tuple[str, ...] = ()
    # Tables whose rows the replay writes over and over (an enrollment, at each of its steps).
    # A rebuild fills their pages to REWRITTEN_FILLFACTOR percent only, so that every new
    # version of a row fits on the row's page: a heap-only update, which touches no index
    # (a third of the cost of one that does). The table's own setting is restored at the end.
    rewritten_tables: tuple[str, ...] = ()
    # Replayed in the log's own order, not in runs of one category (_in_replay_order): for a
    # projection whose handlers read what an event of another category wrote before (the
    # analytics count an opt-out on the enrollment's last email, an EmailSent before it).
    in_log_order: bool = False


# room for about ten versions of each row written during the rebuild
REWRITTEN_FILLFACTOR = 10


async def rebuild(
    engine: AsyncEngine,
    store: EventStore,
    projection: Projection,
    batch_size: int = 5000,
    progress: Callable[[int], None] = lambda n: None,
) -> int:
    """Rebuild one projection from the log; returns how many events it replayed."""
    subscription = projection.subscription
    async with engine.begin() as conn:
        # live handlers of this projection hold the same key shared: wait for them, hold them off
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": subscription.rebuild_lock}
        )
        restore = await _emptied(conn, projection)
        # The log is read on a second connection, a batch ahead, so that reading and decoding
        # the next batch overlaps the server's work on this one. Its snapshot is taken after
        # the lock: events committed later wait for the live handlers, which wait for us.
        async with engine.connect() as reading:
            batches = store.read_all(reading, subscription.categories, batch_size,
                                     types_with_data=subscription.handled_types)
            positions, replayed = await _replay(conn, projection, _read_ahead(batches), progress)
        await replace_positions(conn, subscription, positions)
        await restore()
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


async def _replay(conn: AsyncConnection, projection: Projection,
                  batches: AsyncIterator[list[StoredEvent]],
                  progress: Callable[[int], None]) -> tuple[dict[str, int], int]:
    """Hand every batch to the handlers; returns the version reached in each stream, and how
    many events were replayed."""
    positions: dict[str, int] = {}
    replayed, analyzed_at = 0, 0
    async for batch in batches:
        _advance(positions, batch)
        await dispatch(conn, projection.subscription,
                       batch if projection.in_log_order else _in_replay_order(batch))
        replayed += len(batch)
        progress(replayed)
        if replayed >= 2 * analyzed_at:
            # The emptied tables have no statistics: without them the planner may join each
            # batch against whole tables (dead row versions too), or nest loops over them.
            # Fresh ones each time the replay doubled.
            await conn.execute(text(f"ANALYZE {', '.join(projection.tables)}"))
            analyzed_at = replayed
    return positions, replayed


def _advance(positions: dict[str, int], batch: list[StoredEvent]) -> None:
    """Move each stream's position over `batch`, which must follow it without a gap."""
    for event in batch:
        if event.version != positions.get(event.stream_id, 0) + 1:
            raise RuntimeError("the log has a gap or a repeat: rebuild stopped, nothing changed")
        positions[event.stream_id] = event.version


async def _emptied(conn: AsyncConnection, projection: Projection) -> Callable[[], Awaitable]:
    """Empty the projection's tables and make them cheap to rebuild (see `Projection`);
    returns what puts their indexes and settings back."""
    await conn.execute(text(f"TRUNCATE {', '.join(projection.tables)}"))
    indexes = await _drop_indexes(conn, projection.unread_indexes)
    fillfactors = await _fillfactors(conn, projection.rewritten_tables)
    for table in fillfactors:
        await conn.execute(text(f"ALTER TABLE {table} SET (fillfactor = {REWRITTEN_FILLFACTOR})"))

    async def restore() -> None:
        for table, fillfactor in fillfactors.items():
            setting = f"SET (fillfactor = {fillfactor})" if fillfactor else "RESET (fillfactor)"
            await conn.execute(text(f"ALTER TABLE {table} {setting}"))
        for definition in indexes:
            await conn.execute(text(definition))

    return restore


async def _drop_indexes(conn: AsyncConnection, names: tuple[str, ...]) -> list[str]:
    """Drop the indexes `names`; returns the statements that make them again."""
    if not names:
        return []
    rows = (await conn.execute(
        text("SELECT schemaname || '.' || indexname, indexdef FROM pg_indexes"
             " WHERE schemaname || '.' || indexname = ANY(:names)"), {"names": list(names)}
    )).all()
    if missing := set(names) - {name for name, _ in rows}:
        log.warning("rebuild: no index %s to drop (renamed?)", ", ".join(sorted(missing)))
    if rows:
        await conn.execute(text(f"DROP INDEX {', '.join(name for name, _ in rows)}"))
    return [definition for _, definition in rows]


async def _fillfactors(conn: AsyncConnection, tables: tuple[str, ...]) -> dict[str, int | None]:
    """Each table's own fillfactor (None: the default)."""
    settings = {}
    for table in tables:
        options = (await conn.execute(
            text("SELECT reloptions FROM pg_class WHERE oid = CAST(:t AS regclass)"),
            {"t": table})).scalar() or []
        settings[table] = next((int(o.split("=", 1)[1]) for o in options
                                if o.startswith("fillfactor=")), None)
    return settings


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
