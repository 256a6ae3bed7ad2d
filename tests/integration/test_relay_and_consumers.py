"""The relay and consumers against real PostgreSQL and NATS JetStream."""

from __future__ import annotations

import asyncio
import signal
import uuid

import psycopg
import pytest
from nats.js.errors import NotFoundError
from sqlalchemy import text

from contracts.base import EventEnvelope
from contracts.events import ContactCreated, ContactUpdated
from contracts.subjects import EVENTS_STREAM
from sequences.db import libpq_url
from sequences.eventlog.relay import Relay
from sequences.eventlog.store import Append, Causation
from sequences.messaging.consumer import EventConsumer, Subscription
from sequences.messaging.nats import MSG_ID
from tests.support import TEST_WORKSPACE, eventually, sequences_process


def contact(name: str = "김민수", contact_id: uuid.UUID | None = None) -> ContactCreated:
    return ContactCreated(contact_id=contact_id or uuid.uuid4(), name=name, email="kim@example.com")


async def append(engine, store, *events, expected=0):
    async with engine.begin() as conn:
        return await store.append(
            conn, [Append(events[0].stream_id(), expected, list(events))], Causation.new(TEST_WORKSPACE)
        )


async def relay_once(database_url, js) -> int:
    relay = Relay(database_url, js)
    async with await psycopg.AsyncConnection.connect(
        libpq_url(database_url), autocommit=True, row_factory=psycopg.rows.dict_row
    ) as conn:
        return await relay.relay_batch(conn)


async def stream_messages(js) -> list[tuple[str, EventEnvelope]]:
    """Every message in the events stream: (Nats-Msg-Id, envelope)."""
    info = await js.stream_info(EVENTS_STREAM)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(EVENTS_STREAM, seq)
        except NotFoundError:  # a gap: a deleted (or lost and counted deleted) message
            continue
        found.append((msg.headers[MSG_ID], EventEnvelope.model_validate_json(msg.data)))
    return found if info.state.messages else []


async def test_relay_publishes_every_event_in_stream_order_with_its_id(engine, store, js,
                                                                       database_url):
    first = contact("a")
    await append(engine, store, first, contact("b", first.contact_id))
    await append(engine, store, contact("c"))
    assert await relay_once(database_url, js) == 3
    published = await stream_messages(js)
    assert [e.data["name"] for _, e in published] == ["a", "b", "c"]
    assert all(msg_id == str(e.event_id) for msg_id, e in published)
    assert published[0][1].nats_subject == "seq.events.contact.ContactCreated"
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM eventlog.outbox"))).scalar() == 0


async def test_the_relay_publishes_the_envelope_the_store_wrote(engine, store, js, database_url):
    """The relay publishes each envelope's JSON as PostgreSQL writes it from the row, not through
    the model: the same envelope comes out."""
    tricky = ContactCreated(contact_id=uuid.uuid4(), name='김 "Kim" \\ O\'Neil', tags=["ü", "b"],
                            email="kim@example.com", timezone="Asia/Seoul")
    async with engine.begin() as conn:
        written = await store.append(conn, [Append(tricky.stream_id(), 0, [tricky])], Causation(
            workspace_id=TEST_WORKSPACE, correlation_id=uuid.uuid4(), causation_id=uuid.uuid4(),
            traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            tracestate="vendor=a,other=b"))
    await append(engine, store, contact("plain"))
    assert await relay_once(database_url, js) == 2
    [(msg_id, published), (_, plain)] = await stream_messages(js)
    assert msg_id == str(written[0].event_id)
    assert published == written[0]
    assert plain.causation_id is None and plain.traceparent is None


async def test_positions_committing_out_of_order_are_not_skipped(engine, store, js, database_url):
    slow = await engine.connect()
    slow_tx = await slow.begin()
    await store.append(slow, [Append(contact().stream_id(), 0, [contact("slow")])], Causation.new(TEST_WORKSPACE))
    await append(engine, store, contact("fast"))  # higher position, commits first
    assert await relay_once(database_url, js) == 1
    await slow_tx.commit()
    await slow.close()
    assert await relay_once(database_url, js) == 1
    assert sorted(e.data["name"] for _, e in await stream_messages(js)) == ["fast", "slow"]


@pytest.mark.parametrize("crash_at", ["relay.before_publish", "relay.after_publish"])
async def test_a_relay_killed_around_publishing_publishes_each_event_once(
    engine, store, js, database_url, nats_url, crash_at
):
    [envelope] = await append(engine, store, contact())
    env = {"DATABASE_URL": database_url, "NATS_URL": nats_url, "SEQUENCES_CRASH_AT": crash_at}
    crashed = sequences_process(["relay"], env)
    assert await asyncio.to_thread(crashed.wait, 30) == -signal.SIGKILL
    restarted = sequences_process(["relay"], {**env, "SEQUENCES_CRASH_AT": ""})
    try:
        async def outbox_empty():
            async with engine.connect() as conn:
                return (await conn.execute(text("SELECT count(*) FROM eventlog.outbox"))
                        ).scalar() == 0
        await eventually(outbox_empty)
    finally:
        restarted.terminate()
        restarted.wait(10)
    assert [msg_id for msg_id, _ in await stream_messages(js)] == [str(envelope.event_id)]

    seen = await consume_all(engine, js, "counting")
    assert seen == {envelope.event_id: 1}


async def consume_all(engine, js, name: str, expected: int = 1) -> dict[uuid.UUID, int]:
    """Run a consumer whose handler counts each event it applies, in the handler's transaction."""
    async with engine.begin() as conn:
        await conn.execute(text(
            "CREATE TABLE IF NOT EXISTS public.applied (event_id uuid, consumer text)"))
    subscription = Subscription(name, ["contact"])

    @subscription.on(ContactCreated)
    async def count_it(event, d):
        await d.conn.execute(text("INSERT INTO public.applied VALUES (:id, :c)"),
                             {"id": d.envelope.event_id, "c": name})

    consumer = EventConsumer(subscription, js, engine)
    task = asyncio.create_task(consumer.run())

    async def applied():
        async with engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT event_id, count(*) FROM public.applied WHERE consumer = :c"
                " GROUP BY event_id"), {"c": name})).all()
        return {r[0]: r[1] for r in rows} if sum(r[1] for r in rows) >= expected else None

    try:
        await eventually(applied)
        await asyncio.sleep(0.3)  # time for any duplicate to show up
        return await applied()
    finally:
        task.cancel()


async def test_a_redelivered_or_early_event_is_applied_once_and_in_order(engine, store, js,
                                                                         database_url):
    first = contact("v1")
    written = await append(engine, store, first, contact("v2", first.contact_id))
    v1, v2 = written
    # publish v2 before v1, then v1 twice (as a restarted relay past the dedupe window would)
    for envelope in (v2, v1, v1):
        await js.publish(envelope.nats_subject, envelope.model_dump_json().encode(),
                         headers={MSG_ID: f"{envelope.event_id}-{uuid.uuid4()}"})
    seen = await consume_all(engine, js, "ordering", expected=2)
    assert seen == {v1.event_id: 1, v2.event_id: 1}
    async with engine.connect() as conn:
        position = (await conn.execute(text(
            "SELECT version FROM eventlog.consumer_positions WHERE consumer = 'ordering'"))).scalar()
    assert position == 2


def updated(of: ContactCreated) -> ContactUpdated:
    return ContactUpdated(contact_id=of.contact_id, changes={"company": "한빛상사"})


async def run_counting(engine, js, name: str, types: tuple, until,
                       meanwhile=None) -> dict[uuid.UUID, int]:
    """A consumer of the contact category handling `types` (each applied event counted in the
    handler's transaction) until `until(counts)` holds; returns the counts. `meanwhile` is
    awaited once the consumer has been running a moment (its filter set)."""
    async with engine.begin() as conn:
        await conn.execute(text(
            "CREATE TABLE IF NOT EXISTS public.applied (event_id uuid, consumer text)"))
    subscription = Subscription(name, ["contact"])
    for event_type in types:
        @subscription.on(event_type)
        async def count_it(event, d):
            await d.conn.execute(text("INSERT INTO public.applied VALUES (:id, :c)"),
                                 {"id": d.envelope.event_id, "c": name})

    async def counts():
        async with engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT event_id, count(*) FROM public.applied WHERE consumer = :c"
                " GROUP BY event_id"), {"c": name})).all()
        found = {r[0]: r[1] for r in rows}
        return found if until(found) else None

    task = asyncio.create_task(EventConsumer(subscription, js, engine).run())
    try:
        if meanwhile:
            # (past the 1 s pull request a cancelled consumer of the same name left waiting)
            await asyncio.sleep(1.5)
            await meanwhile()
        await eventually(counts)
        await asyncio.sleep(0.3)  # time for any duplicate to show up
        return await counts()
    finally:
        task.cancel()


async def publish_out_of_order(js, *envelopes):
    for envelope in envelopes:
        await js.publish(envelope.nats_subject, envelope.model_dump_json().encode(),
                         headers={MSG_ID: f"{envelope.event_id}-{uuid.uuid4()}"})


async def test_a_consumer_is_given_only_its_types_and_still_waits_for_an_earlier_one(
        engine, store, js, database_url):
    first = contact("v1")
    v1, v2, v3 = await append(engine, store, first, updated(first),
                              contact("v3", first.contact_id))
    # v3 first: v1, a type it reads, is still on its way; v2 is a type it does not read
    await publish_out_of_order(js, v3, v2, v1)
    seen = await run_counting(engine, js, "only-created", (ContactCreated,),
                              until=lambda found: len(found) >= 2)
    assert seen == {v1.event_id: 1, v3.event_id: 1}
    info = await js.consumer_info(EVENTS_STREAM, "only-created")
    assert info.config.filter_subjects == ["seq.events.contact.ContactCreated"]
    assert info.num_pending == 0 and info.delivered.consumer_seq >= 2
    async with engine.connect() as conn:
        position = (await conn.execute(text(
            "SELECT version FROM eventlog.consumer_positions WHERE consumer = 'only-created'"))
                    ).scalar()
    assert position == 3


async def test_a_type_a_consumer_reads_from_a_new_version_on_is_not_waited_for_before(
        engine, store, js, database_url):
    first = contact("v1")
    v1, v2 = await append(engine, store, first, updated(first))
    await relay_once(database_url, js)
    assert await run_counting(engine, js, "growing", (ContactCreated,),
                              until=lambda found: len(found) >= 1) == {v1.event_id: 1}
    # a new version also handles ContactUpdated: v2, from before it, is not given to it, and
    # what comes after does not wait for it
    second = contact("v3", first.contact_id)
    written = []

    async def append_more():
        written.extend(await append(engine, store, second, updated(second), expected=2))
        await relay_once(database_url, js)

    seen = await run_counting(engine, js, "growing", (ContactCreated, ContactUpdated),
                              until=lambda found: len(found) >= 3, meanwhile=append_more)
    v3, v4 = written
    assert seen == {v1.event_id: 1, v3.event_id: 1, v4.event_id: 1}
    async with engine.connect() as conn:
        filters = dict((await conn.execute(text(
            "SELECT type, since FROM eventlog.consumer_filters WHERE consumer = 'growing'"))
                        ).all())
        v2_position = (await conn.execute(text(
            "SELECT position FROM eventlog.events WHERE event_id = :id"), {"id": v2.event_id})
                       ).scalar()
    # the log's end when the new version started: v2 then
    assert filters == {"ContactCreated": 0, "ContactUpdated": v2_position}
