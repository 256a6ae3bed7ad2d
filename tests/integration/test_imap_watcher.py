"""The thread-watcher against a real IMAP server (Dovecot) and a real PostgreSQL: messages
appended over IMAP become ReplyDetected / BounceDetected / AutoReplyDetected once each, across
restarts and UIDVALIDITY changes; a broken mailbox is retried and reported without stopping the
others; malformed, huge and oddly encoded mail does not stop the watcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import text

from contracts.commands import GetMailboxHealth
from contracts.events import EmailSent
from sequences.clock import SystemClock
from sequences.devstack.dovecot import Dovecot, dovecot_binary
from sequences.devstack.ports import free_port
from sequences.eventlog.store import Append, Causation
from sequences.messaging.consumer import handle_once
from services.thread_watcher.config import WatcherSettings, parse_mailbox
from services.thread_watcher.devmail import auto_reply_to, bounce_of, reply_to
from services.thread_watcher.handlers import HealthQueries, watcher as sent_subscription
from services.thread_watcher.watcher import MailboxWatcher, Storage, Watching
from tests.support import TEST_WORKSPACE, eventually

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mail"
WATCHED = ("ReplyDetected", "BounceDetected", "AutoReplyDetected")


# a mailbox of its own for each test, with a password that needs quoting in a URL
USERS = {f"rep{n}": f"pw {n}/@%" for n in range(8)}


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory):
    if dovecot_binary() is None:
        pytest.skip("Dovecot is not installed (apt-get install dovecot-imapd; .ci/run does)")
    with Dovecot(tmp_path_factory.mktemp("dovecot"), more_users=USERS) as server:
        yield server


@pytest.fixture(scope="module")
def users(dovecot):
    return iter(USERS)


@pytest.fixture
def user(users) -> str:
    return next(users)


@pytest.fixture
def storage(engine, database_url, store):
    return Storage(engine, database_url, store, SystemClock())


def watching(storage, *urls: str, poll: float = 30.0, backoff: float = 2.0) -> Watching:
    settings = WatcherSettings(tuple(parse_mailbox(u) for u in urls), poll_seconds=poll)
    return Watching([MailboxWatcher(m, storage, settings, backoff_base=backoff)
                     for m in settings.mailboxes], poll)


@contextlib.asynccontextmanager
async def running(target: Watching):
    task = asyncio.create_task(target.run())
    try:
        yield target
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def sent_email(storage, to: str, subject: str = "Quote", message_id: str | None = None):
    """An email of ours, recorded the way the thread-watcher learns of it (EmailSent handled by
    its consumer); returns it as a parsed message, like the captured copy."""
    event = EmailSent(
        enrollment_id=uuid.uuid4(), sequence_id=uuid.uuid4(), contact_id=uuid.uuid4(),
        step_id=uuid.uuid4(), step_index=0, message_id=message_id or f"<{uuid.uuid4()}@sales.example>",
        recipient=to, subject=subject, sent_at=datetime.now(UTC))
    async with storage.engine.begin() as conn:
        [envelope] = await storage.store.append(
            conn, [Append(event.stream_id(), 0, [event])], Causation.new(TEST_WORKSPACE))
    await handle_once(storage.engine, sent_subscription, [envelope])
    raw = (f"From: Younghee Lee <younghee@sales.example>\r\nTo: {to}\r\nSubject: {subject}\r\n"
           f"Date: Wed, 25 Nov 2026 09:30:00 +0900\r\nMessage-ID: {event.message_id}\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n\r\nHello\r\n").encode()
    return event, message_from_bytes(raw, policy=policy.default)


async def detected(engine, minimum: int = 1, timeout: float = 15) -> list[tuple[str, str, dict]]:
    async def found():
        async with engine.connect() as conn:
            rows = (await conn.execute(
                text("SELECT type, stream_id, data FROM eventlog.events"
                     " WHERE type = ANY(:types) ORDER BY position"), {"types": list(WATCHED)},
            )).all()
        return [tuple(r) for r in rows] if len(rows) >= minimum else None

    return await eventually(found, timeout=timeout)


async def count(engine, sql: str) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql))).scalar_one()


def now() -> datetime:
    return datetime.now(UTC)


async def test_a_reply_is_seen_within_seconds_through_idle(dovecot, user, storage):
    sent, original = await sent_email(storage, "kim@customer.example", "견적 건")
    # a poll interval far longer than the test: only IDLE can find the reply in time
    async with running(watching(storage, dovecot.url_for(user), poll=600)) as target:
        await eventually(lambda: _idle_ready(storage), timeout=10)
        appended = time.monotonic()
        await asyncio.to_thread(dovecot.append, user, reply_to(original, now(), "네, 좋습니다"))
        [(kind, stream, data)] = await detected(storage.engine)
        latency = time.monotonic() - appended
        health = await HealthQueries(storage.engine, target_settings(target)).mailbox_health(
            GetMailboxHealth(workspace_id=TEST_WORKSPACE, addresses=[]))
    assert (kind, stream) == ("ReplyDetected", f"inbox-{sent.enrollment_id}")
    assert (data["matched_by"], data["in_reply_to"]) == ("headers", sent.message_id)
    assert data["sender"] == "kim@customer.example"
    assert data["excerpt"].startswith("네, 좋습니다")
    assert latency < 2.0, f"IDLE reply took {latency:.2f}s"
    assert [(h.healthy, h.idle, h.state) for h in health] == [(True, True, "watching")]


def target_settings(target: Watching) -> WatcherSettings:
    return WatcherSettings(tuple(w.config for w in target.watchers))


async def _idle_ready(storage) -> bool:
    return await count(storage.engine, "SELECT count(*) FROM watcher.mailbox_health"
                                       " WHERE idle AND healthy") == 1


async def test_polling_finds_a_bounce_in_its_folder_and_tells_auto_replies_from_replies(
        dovecot, user, storage):
    bounced, bounced_original = await sent_email(storage, "nobody@customer.example")
    away, away_original = await sent_email(storage, "kim@customer.example", "제안서")
    url = dovecot.url_for(user, "?folders=INBOX,Bounces&idle=0")
    async with running(watching(storage, url, poll=0.2)):
        await asyncio.to_thread(dovecot.append, user, bounce_of(bounced_original, now()),
                                "Bounces")
        await asyncio.to_thread(dovecot.append, user, auto_reply_to(away_original, now()))
        # (the first auto-reply loads the return-date reader: seconds on a loaded machine)
        events = await detected(storage.engine, minimum=2, timeout=60)
    by_type = {kind: (stream, data) for kind, stream, data in events}
    assert sorted(by_type) == ["AutoReplyDetected", "BounceDetected"]
    stream, bounce = by_type["BounceDetected"]
    assert stream == f"bounce-{bounced.enrollment_id}"
    assert (bounce["kind"], bounce["status"], bounce["detected_by"]) == ("hard", "5.1.1", "mailbox")
    assert bounce["original_message_id"] == bounced.message_id
    stream, auto = by_type["AutoReplyDetected"]
    assert stream == f"inbox-{away.enrollment_id}"
    assert auto["reason"] == "Auto-Submitted: auto-replied"


async def test_a_restart_and_a_uidvalidity_change_emit_nothing_twice(dovecot, user, storage):
    url = dovecot.url_for(user, "?folders=INBOX,Replies&idle=0")
    originals = [await sent_email(storage, f"c{i}@customer.example") for i in range(3)]
    replies = [reply_to(original, now()) for _, original in originals]
    async with running(watching(storage, url, poll=0.2)):
        for reply in replies[:2]:
            await asyncio.to_thread(dovecot.append, user, reply, "Replies")
        await detected(storage.engine, minimum=2)

    # a new watcher (a restarted process) reads on from where the first one stopped
    await asyncio.to_thread(dovecot.append, user, replies[2], "Replies")
    async with running(watching(storage, url, poll=0.2)):
        await detected(storage.engine, minimum=3)
        # the folder is recreated with a new UIDVALIDITY and the same three messages in it
        before = await _uidvalidity(storage)
        await asyncio.to_thread(dovecot.recreate_folder, user, "Replies")
        for reply in replies:
            await asyncio.to_thread(dovecot.append, user, reply, "Replies")
        await eventually(lambda: _uidvalidity_changed(storage, before), timeout=10)
        await asyncio.sleep(0.5)  # a few more polls, room for a duplicate to appear

    events = await detected(storage.engine)
    assert sorted(stream for _, stream, _ in events) == sorted(
        f"inbox-{sent.enrollment_id}" for sent, _ in originals)
    assert await count(storage.engine, "SELECT count(*) FROM watcher.examined_messages") == 3


async def _uidvalidity(storage) -> int:
    return await count(storage.engine, "SELECT uidvalidity FROM watcher.folder_positions"
                                       " WHERE folder = 'Replies'")


async def _uidvalidity_changed(storage, before: int) -> bool:
    return await _uidvalidity(storage) != before


async def test_unreachable_and_refused_mailboxes_are_retried_and_reported_the_others_go_on(
        dovecot, user, users, storage, caplog):
    sent, original = await sent_email(storage, "kim@customer.example")
    wrong_password = f"imap://{next(users)}:not-the-password@127.0.0.1:{dovecot.port}?idle=0"
    unreachable = f"imap://nobody:secret-pw@127.0.0.1:{free_port()}?idle=0"
    target = watching(storage, dovecot.url_for(user, "?idle=0"), wrong_password, unreachable,
                      poll=0.2, backoff=0.1)
    caplog.set_level(logging.DEBUG)
    async with running(target):
        await asyncio.to_thread(dovecot.append, user, reply_to(original, now()))
        await detected(storage.engine)
        health = await eventually(lambda: _retried(storage, target), timeout=10)
    good, refused, down = health
    assert (good.healthy, good.state, good.last_error) == (True, "watching", None)
    assert (refused.healthy, refused.state) == (False, "failing")
    assert "login rejected" in refused.last_error and "AUTHENTICATIONFAILED" in refused.last_error
    assert (down.healthy, down.state) == (False, "failing")
    assert "connect" in down.last_error
    assert refused.next_attempt_at > refused.last_attempt_at
    everything = caplog.text + " ".join(h.model_dump_json() for h in health)
    for password in (dovecot.users[user], "not-the-password", "secret-pw"):
        assert password not in everything


async def _retried(storage, target: Watching):
    health = await HealthQueries(storage.engine, target_settings(target)).mailbox_health(
        GetMailboxHealth(workspace_id=TEST_WORKSPACE, addresses=[]))
    ordered = sorted(health, key=lambda h: (not h.healthy, "refused" not in str(h.last_error)))
    failing = [h for h in health if not h.healthy]
    return ordered if len(failing) == 2 and all(h.consecutive_failures >= 2 for h in failing) \
        else None


async def test_malformed_huge_and_strangely_encoded_mail_does_not_stop_the_watcher(
        dovecot, user, storage):
    kim, _ = await sent_email(storage, "kim@customer.example", message_id=(
        "<0b5c3d1e-7a2f-5c11-9e40-000000000001@sales.example>"))  # what the broken one answers
    last, original = await sent_email(storage, "lee@customer.example")
    huge = (b"From: lee@customer.example\r\nSubject: big attachment\r\nMessage-ID: <huge@x>\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n" + b"A" * (26 * 1024 * 1024))
    strange = [(FIXTURES / name).read_bytes() for name in
               ("garbled_headers.eml", "missing_headers.eml", "broken_charset_reply.eml")]
    async with running(watching(storage, dovecot.url_for(user, "?idle=0"), poll=0.2)):
        for raw in (*strange, huge, reply_to(original, now())):
            await asyncio.to_thread(dovecot.append, user, raw)
        events = await detected(storage.engine, minimum=2, timeout=30)
    assert sorted(stream for _, stream, _ in events) == sorted(
        [f"inbox-{kim.enrollment_id}", f"inbox-{last.enrollment_id}"])
    assert await count(storage.engine, "SELECT count(*) FROM watcher.examined_messages") == 5
    assert await count(storage.engine, "SELECT count(*) FROM watcher.examined_messages WHERE"
                                       " reasons LIKE '%first MiB%'") == 1
