"""The event log against a real PostgreSQL: versions, conflicts, atomicity, the outbox."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text

from contracts.base import stream_id
from contracts.events import ContactCreated
from sequences.eventlog.store import ANY_VERSION, Append, Causation, ConcurrencyConflict
from tests.support import TEST_WORKSPACE

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def contact(contact_id: uuid.UUID | None = None, name: str = "김민수") -> ContactCreated:
    return ContactCreated(contact_id=contact_id or uuid.uuid4(), name=name, email="kim@example.com")


async def count(engine, sql: str) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql))).scalar_one()


async def test_append_then_read_keeps_versions_and_data(engine, store):
    event = contact()
    async with engine.begin() as conn:
        written = await store.append(
            conn, [Append(event.stream_id(), 0, [event, contact(event.contact_id, "박")])],
            Causation.new(TEST_WORKSPACE),
        )
    assert [e.version for e in written] == [1, 2]
    async with engine.connect() as conn:
        read = await store.read_stream(conn, event.stream_id())
    assert [(e.version, e.data["name"]) for e in read] == [(1, "김민수"), (2, "박")]
    assert read[0].correlation_id == read[1].correlation_id
    assert await count(engine, "SELECT count(*) FROM eventlog.outbox") == 2


async def test_two_concurrent_appends_at_the_same_version_exactly_one_wins(engine, store):
    stream = stream_id("contact", uuid.uuid4())
    both_ready = asyncio.Barrier(2)

    async def append_as(name: str):
        async with engine.begin() as conn:
            await both_ready.wait()
            event = ContactCreated(contact_id=uuid.UUID(stream[8:]), name=name, email="a@b.co")
            await store.append(conn, [Append(stream, 0, [event])], Causation.new(TEST_WORKSPACE))

    results = await asyncio.gather(append_as("a"), append_as("b"), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["ConcurrencyConflict", "NoneType"]
    async with engine.connect() as conn:
        assert len(await store.read_stream(conn, stream)) == 1


async def test_a_stale_expected_version_is_a_conflict_not_an_overwrite(engine, store):
    event = contact()
    async with engine.begin() as conn:
        await store.append(conn, [Append(event.stream_id(), 0, [event])], Causation.new(TEST_WORKSPACE))
    with pytest.raises(ConcurrencyConflict):
        async with engine.begin() as conn:
            await store.append(
                conn, [Append(event.stream_id(), 0, [contact(event.contact_id, "x")])],
                Causation.new(TEST_WORKSPACE),
            )
    async with engine.connect() as conn:
        assert [e.data["name"] for e in await store.read_stream(conn, event.stream_id())] == ["김민수"]


async def test_a_multi_stream_append_is_atomic(engine, store):
    taken = contact()
    async with engine.begin() as conn:
        await store.append(conn, [Append(taken.stream_id(), 0, [taken])], Causation.new(TEST_WORKSPACE))
    fresh = contact()
    with pytest.raises(ConcurrencyConflict):
        async with engine.begin() as conn:
            await store.append(
                conn,
                [Append(fresh.stream_id(), 0, [fresh]), Append(taken.stream_id(), 0, [taken])],
                Causation.new(TEST_WORKSPACE),
            )
    async with engine.connect() as conn:
        assert await store.read_stream(conn, fresh.stream_id()) == []
    assert await count(engine, "SELECT count(*) FROM eventlog.events") == 1


async def test_any_version_appends_after_what_is_there(engine, store):
    event = contact()
    for _ in range(3):
        async with engine.begin() as conn:
            await store.append(conn, [Append(event.stream_id(), ANY_VERSION, [event])],
                               Causation.new(TEST_WORKSPACE))
    async with engine.connect() as conn:
        assert [e.version for e in await store.read_stream(conn, event.stream_id())] == [1, 2, 3]


async def test_streams_begun_inside_an_event_are_found_from_it_and_begun_once(engine, store):
    """An import's chunk (`ContactsImported`) begins its contacts' streams: reading them finds
    that event, read once for all of them; a second event beginning one of them conflicts."""
    from contracts.events import ContactsImported, ContactUpdated

    ids = [uuid.uuid4() for _ in range(3)]
    chunk = ContactsImported(import_id=uuid.uuid4(), contacts=[
        {"contact_id": i, "email": f"n{n}@example.com"} for n, i in enumerate(ids)])
    streams = [stream_id("contact", i) for i in ids]
    async with engine.begin() as conn:
        [written] = await store.append(conn, [Append(chunk.stream_id(), 0, [chunk])],
                                       Causation.new(TEST_WORKSPACE))
        # the contact's own stream counts from 1 after it
        await store.append(conn, [Append(streams[0], 0, [
            ContactUpdated(contact_id=ids[0], changes={"name": "김"})])],
            Causation.new(TEST_WORKSPACE))
    async with engine.connect() as conn:
        origins = await store.read_origins(conn, [*streams, stream_id("contact", uuid.uuid4())])
        own = await store.read_streams(conn, streams)
    assert sorted(origins) == sorted(streams)
    assert {origin.event_id for origin in origins.values()} == {written.event_id}
    assert origins[streams[1]].data["contacts"][1]["email"] == "n1@example.com"
    assert [(e.version, e.type) for e in own[streams[0]]] == [(1, "ContactUpdated")]
    again = ContactsImported(import_id=uuid.uuid4(), contacts=[
        {"contact_id": ids[2], "email": "other@example.com"}])
    with pytest.raises(ConcurrencyConflict):
        async with engine.begin() as conn:
            await store.append(conn, [Append(again.stream_id(), 0, [again])],
                               Causation.new(TEST_WORKSPACE))
    async with engine.connect() as conn:
        assert (await store.read_origins(conn, [streams[2]]))[streams[2]].event_id == \
            written.event_id


# one more stream, and a batch of many
BOTH_WAYS = pytest.mark.parametrize("size", [1, 40], ids=["one", "batch"])


@BOTH_WAYS
async def test_a_batch_reads_back_as_appended_with_its_outbox_rows_in_log_order(engine, store, size):
    traced = Causation(TEST_WORKSPACE, uuid.uuid4(), uuid.uuid4(), traceparent=TRACEPARENT,
                       tracestate="vendor=1")
    events = [contact(name=f"김민수 {i} \"q\" \\ é") for i in range(size)]
    first = contact()
    async with engine.begin() as conn:
        written = await store.append(
            conn, [Append(first.stream_id(), 0, [first, contact(first.contact_id, "박")]),
                   *(Append(e.stream_id(), 0, [e]) for e in events)], traced)
    async with engine.connect() as conn:
        read = await store.read_streams(conn, [e.stream_id for e in written])
        rows = (await conn.execute(text(
            "SELECT e.event_id FROM eventlog.outbox o JOIN eventlog.events e USING (position)"
            " ORDER BY o.position"))).scalars().all()
    assert [e for stream in read.values() for e in stream] == sorted(
        written, key=lambda e: (e.stream_id, e.version))
    assert read[first.stream_id()][1].data["name"] == "박"
    assert rows == [e.event_id for e in written]  # positions follow the append's order


@BOTH_WAYS
async def test_a_batch_with_one_stale_stream_is_a_conflict_and_writes_nothing(engine, store, size):
    taken = contact()
    async with engine.begin() as conn:
        await store.append(conn, [Append(taken.stream_id(), 0, [taken])], Causation.new(TEST_WORKSPACE))
    fresh = [contact() for _ in range(size)]
    with pytest.raises(ConcurrencyConflict):
        async with engine.begin() as conn:
            await store.append(
                conn, [*(Append(e.stream_id(), 0, [e]) for e in fresh),
                       Append(taken.stream_id(), 0, [contact(taken.contact_id, "x")])],
                Causation.new(TEST_WORKSPACE))
    assert await count(engine, "SELECT count(*) FROM eventlog.events") == 1
    assert await count(engine, "SELECT count(*) FROM eventlog.outbox") == 1


# --- an append as a transaction of its own --------------------------------------------------


async def pooled_connections_are_transactional(engine) -> None:
    """Every pooled connection is out of autocommit mode again: an insert rolled back on it
    leaves nothing (a connection left in autocommit would keep it)."""
    stream = stream_id("contact", uuid.uuid4())
    conns = [await engine.connect() for _ in range(engine.pool.size())]
    try:
        for conn in conns:
            await conn.execute(text(
                "INSERT INTO eventlog.stream_origins (stream_id, event_id) VALUES (:s, :e)"),
                {"s": stream, "e": uuid.uuid4()})
            await conn.rollback()
    finally:
        for conn in conns:
            await conn.close()
    assert await count(engine, f"SELECT count(*) FROM eventlog.stream_origins"
                               f" WHERE stream_id = '{stream}'") == 0


async def test_commit_append_commits_its_events_and_outbox_rows(engine, store):
    event = contact()
    written = await store.commit_append(
        engine, [Append(event.stream_id(), 0, [event, contact(event.contact_id, "박")])],
        Causation.new(TEST_WORKSPACE))
    assert [e.version for e in written] == [1, 2]
    async with engine.connect() as conn:
        read = await store.read_stream(conn, event.stream_id())
    assert read == written
    assert await count(engine, "SELECT count(*) FROM eventlog.outbox") == 2
    await pooled_connections_are_transactional(engine)


async def test_commit_append_of_a_stale_version_is_a_conflict_and_writes_nothing(engine, store):
    taken, fresh = contact(), contact()
    await store.commit_append(engine, [Append(taken.stream_id(), 0, [taken])],
                              Causation.new(TEST_WORKSPACE))
    with pytest.raises(ConcurrencyConflict):
        await store.commit_append(
            engine, [Append(fresh.stream_id(), 0, [fresh]),
                     Append(taken.stream_id(), 0, [contact(taken.contact_id, "x")])],
            Causation.new(TEST_WORKSPACE))
    assert await count(engine, "SELECT count(*) FROM eventlog.events") == 1
    assert await count(engine, "SELECT count(*) FROM eventlog.outbox") == 1
    await pooled_connections_are_transactional(engine)


async def test_concurrent_commit_appends_at_the_same_version_exactly_one_wins(engine, store):
    stream = stream_id("contact", uuid.uuid4())
    events = [ContactCreated(contact_id=uuid.UUID(stream[8:]), name=n, email="a@b.co")
              for n in "abcd"]
    results = await asyncio.gather(*(
        store.commit_append(engine, [Append(stream, 0, [e])], Causation.new(TEST_WORKSPACE))
        for e in events), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["ConcurrencyConflict"] * 3 + ["list"]
    async with engine.connect() as conn:
        assert len(await store.read_stream(conn, stream)) == 1
    await pooled_connections_are_transactional(engine)


async def test_commit_append_at_any_version_and_of_begun_streams(engine, store):
    from contracts.events import ContactsImported

    event = contact()
    for _ in range(3):
        await store.commit_append(engine, [Append(event.stream_id(), ANY_VERSION, [event])],
                                  Causation.new(TEST_WORKSPACE))
    async with engine.connect() as conn:
        assert [e.version for e in await store.read_stream(conn, event.stream_id())] == [1, 2, 3]
    contact_id = uuid.uuid4()
    chunks = [ContactsImported(import_id=uuid.uuid4(), contacts=[
        {"contact_id": contact_id, "email": "n@example.com"}]) for _ in range(2)]
    [written] = await store.commit_append(engine, [Append(chunks[0].stream_id(), 0, [chunks[0]])],
                                          Causation.new(TEST_WORKSPACE))
    with pytest.raises(ConcurrencyConflict):  # its contact's stream was begun already
        await store.commit_append(engine, [Append(chunks[1].stream_id(), 0, [chunks[1]])],
                                  Causation.new(TEST_WORKSPACE))
    async with engine.connect() as conn:
        origins = await store.read_origins(conn, [stream_id("contact", contact_id)])
        assert await store.read_stream(conn, chunks[1].stream_id()) == []
    assert origins[stream_id("contact", contact_id)].event_id == written.event_id
    await pooled_connections_are_transactional(engine)


async def test_a_single_event_reads_back_as_appended_either_way(engine, store):
    """One event goes by the one-row statement: the same row as the batch's arrays give."""
    traced = Causation(TEST_WORKSPACE, uuid.uuid4(), uuid.uuid4(), traceparent=TRACEPARENT,
                       tracestate="vendor=1")
    first, second = contact(name="김민수 \"q\" \\ é"), contact(name="{\"not\": \"json\"}")
    async with engine.begin() as conn:
        [in_transaction] = await store.append(conn, [Append(first.stream_id(), 0, [first])],
                                              traced)
    [committed] = await store.commit_append(engine, [Append(second.stream_id(), 0, [second])],
                                            traced)
    async with engine.connect() as conn:
        read = await store.read_streams(conn, [first.stream_id(), second.stream_id()])
        outboxed = (await conn.execute(text(
            "SELECT e.event_id FROM eventlog.outbox o JOIN eventlog.events e USING (position)"
            " ORDER BY o.position"))).scalars().all()
    assert read == {first.stream_id(): [in_transaction], second.stream_id(): [committed]}
    assert in_transaction.data["name"] == "김민수 \"q\" \\ é"
    assert outboxed == [in_transaction.event_id, committed.event_id]
