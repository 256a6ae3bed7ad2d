"""The relay after nats-server lost what it had acknowledged (a crash of the machine before its
file store was fsynced, simulated by NatsServer.power_cut): it publishes again, in log order and
with the same ids, exactly what JetStream no longer has, and nothing when nothing was lost. A
stream deleted and created again, or one holding other subjects, stops it with the outbox kept."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text

from contracts.subjects import EVENTS_STREAM
from sequences.db import libpq_url
from sequences.eventlog.relay import Relay, StreamNotOurs
from sequences.messaging.nats import connect, ensure_events_stream, events_stream_config
from tests.integration.test_relay_and_consumers import append, contact, stream_messages


@pytest.fixture
async def conn(database_url, engine):
    async with await psycopg.AsyncConnection.connect(
            libpq_url(database_url), autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        yield conn


async def jetstream(nats_server):
    nc = await connect(nats_server.url, "tests")
    await ensure_events_stream(nc.jetstream())
    return nc


async def appended(engine, store, n: int) -> set[str]:
    events = [contact(f"c{i}") for i in range(n)]
    for event in events:
        await append(engine, store, event)
    async with engine.connect() as c:
        return {str(row[0]) for row in await c.execute(text(
            "SELECT event_id FROM eventlog.events"))}


async def ids_on_stream(js) -> list[str]:
    return [msg_id for msg_id, _ in await stream_messages(js)]


async def test_what_a_power_cut_took_is_published_again_once(nats_server, engine, store, conn,
                                                             database_url):
    logged = await appended(engine, store, 60)
    nc = await jetstream(nats_server)
    relay = Relay(database_url, nc.jetstream(), batch_size=1000)
    assert await relay.relay_batch(conn) == 60
    assert await relay.reconcile(conn) == 0  # nothing lost: nothing published again
    await nc.close()

    assert nats_server.power_cut(EVENTS_STREAM) > 0
    nats_server.start()
    nc = await jetstream(nats_server)
    kept = len(await ids_on_stream(nc.jetstream()))
    assert 0 < kept < 60, "the cut took part of the stream"
    relay = Relay(database_url, nc.jetstream())  # a new relay process: it reads what it sent
    assert await relay.reconcile(conn) == 60 - kept
    on_stream = await ids_on_stream(nc.jetstream())
    assert sorted(on_stream) == sorted(logged)  # every event once, none twice
    assert await relay.reconcile(conn) == 0 and relay.republished == 60 - kept
    await nc.close()


async def test_a_lost_tail_already_written_over_by_new_events_is_noticed(
        nats_server, engine, store, conn, database_url):
    await appended(engine, store, 40)
    nc = await jetstream(nats_server)
    relay = Relay(database_url, nc.jetstream(), check_interval=3600)
    assert await relay.relay_batch(conn) == 40
    await nc.close()
    nats_server.power_cut(EVENTS_STREAM)
    nats_server.start()
    nc = await jetstream(nats_server)
    relay._js = nc.jetstream()  # the same relay, reconnected, before any check of the stream
    logged = await appended(engine, store, 5)
    assert await relay.relay_batch(conn) == 5  # their sequences were given out before
    assert relay.republished > 0
    assert sorted(await ids_on_stream(nc.jetstream())) == sorted(logged)
    await nc.close()


async def test_a_lost_tail_written_over_by_a_relay_that_then_died_is_published_again(
        nats_server, engine, store, conn, database_url):
    """Seen in a fault run: the relay's new events took the sequences of a lost tail, then
    PostgreSQL restarted before it published the tail again. The stream's last sequence now
    covers the old events' remembered sequences, so only what was written over tells."""
    await appended(engine, store, 40)
    nc = await jetstream(nats_server)
    assert await Relay(database_url, nc.jetstream()).relay_batch(conn) == 40
    await nc.close()
    nats_server.power_cut(EVENTS_STREAM, keep=0.3)
    nats_server.start()
    nc = await jetstream(nats_server)
    dying = Relay(database_url, nc.jetstream(), check_interval=3600)
    dying._highest_seq = 40  # it had been given 40 before the cut
    logged = await appended(engine, store, 30)

    async def interrupted(*_args, **_kwargs):
        raise psycopg.OperationalError("terminating connection due to administrator command")
    dying._republish_lost = interrupted
    with pytest.raises(psycopg.OperationalError):
        await dying.relay_batch(conn)  # the 30 are published over the lost tail, then it dies
    info = await nc.jetstream().stream_info(EVENTS_STREAM)
    assert info.state.last_seq >= 40, "the new events cover every sequence the old ones had"

    relay = Relay(database_url, nc.jetstream())  # the next relay to become active
    assert await relay.reconcile(conn) > 0
    assert sorted(await ids_on_stream(nc.jetstream())) == sorted(logged)
    assert await relay.reconcile(conn) == 0
    await nc.close()


async def test_a_clean_restart_republishes_nothing(nats_server, engine, store, conn, database_url):
    await appended(engine, store, 30)
    nc = await jetstream(nats_server)
    assert await Relay(database_url, nc.jetstream()).relay_batch(conn) == 30
    await nc.close()
    nats_server.kill()  # a process crash: what JetStream acknowledged is in its files
    nats_server.start()
    nc = await jetstream(nats_server)
    relay = Relay(database_url, nc.jetstream())
    assert await relay.reconcile(conn) == 0 and relay.republished == 0
    assert len(await ids_on_stream(nc.jetstream())) == 30
    await nc.close()


async def test_messages_lost_inside_the_stream_are_published_again_once(
        nats_server, engine, store, conn, database_url):
    """A server restarted from a state file newer than its blocks (killed again soon after a
    power cut) keeps its last sequence and counts what it lost as deleted: gaps, which the
    last sequence alone does not show. Deleting messages leaves the stream in that state."""
    logged = await appended(engine, store, 30)
    nc = await jetstream(nats_server)
    relay = Relay(database_url, nc.jetstream())
    assert await relay.relay_batch(conn) == 30
    js = nc.jetstream()
    for seq in range(10, 15):
        assert await js.delete_msg(EVENTS_STREAM, seq)
    await nc.close()
    nats_server.kill()  # a restarted server forgets the ids it lost (its duplicate window)
    nats_server.start()
    nc = await jetstream(nats_server)
    js = relay._js = nc.jetstream()
    info = await js.stream_info(EVENTS_STREAM)
    assert (info.state.last_seq, info.state.messages) == (30, 25)

    assert await relay.reconcile(conn) == 5
    on_stream = await ids_on_stream(js)
    assert sorted(on_stream) == sorted(logged)  # every event once, none twice
    assert await relay.reconcile(conn) == 0 and relay.republished == 5  # the gaps stay, handled
    await nc.close()


async def test_a_recreated_stream_stops_the_relay_until_an_operator_adopts_it(
        nats_server, engine, store, conn, database_url):
    await appended(engine, store, 10)
    nc = await jetstream(nats_server)
    js = nc.jetstream()
    relay = Relay(database_url, js)
    await relay.reconcile(conn)
    assert await relay.relay_batch(conn) == 10
    await js.delete_stream(EVENTS_STREAM)
    await js.add_stream(events_stream_config())
    logged = await appended(engine, store, 3)
    with pytest.raises(StreamNotOurs, match="adopt-stream"):
        await relay.reconcile(conn)
    outbox = (await (await conn.execute("SELECT count(*) AS n FROM eventlog.outbox")).fetchone())
    assert outbox["n"] == 3  # kept until it can be published
    assert await relay.adopt_stream(conn) == 13  # the whole log, in order
    assert await relay.reconcile(conn) == 0
    assert await relay.relay_batch(conn) == 0  # the outbox's events went with the log
    assert sorted(await ids_on_stream(js)) == sorted(logged)
    await nc.close()


async def test_a_stream_with_other_subjects_is_refused(nats_server, engine, store, conn,
                                                       database_url):
    nc = await jetstream(nats_server)
    js = nc.jetstream()
    config = events_stream_config()
    config.subjects = [*config.subjects, "other.>"]
    await js.update_stream(config)
    with pytest.raises(StreamNotOurs, match="other"):
        await Relay(database_url, js).reconcile(conn)
    await nc.close()


async def test_a_nats_without_jetstream_is_waited_for_saying_so(tmp_path, caplog):
    import asyncio
    import subprocess

    from sequences.devstack.nats_server import nats_server_binary
    from sequences.devstack.ports import free_port, wait_for_port

    port = free_port()
    server = subprocess.Popen([str(nats_server_binary()), "-a", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port)
        nc = await connect(f"nats://127.0.0.1:{port}", "tests")
        waiting = asyncio.ensure_future(ensure_events_stream(nc.jetstream(), retry_seconds=0.2))
        await asyncio.sleep(1.0)
        assert not waiting.done()  # no traceback, no exit: it waits
        assert "has no JetStream" in caplog.text
        waiting.cancel()
        await nc.close()
    finally:
        server.kill()
        server.wait()
