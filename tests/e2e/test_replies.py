"""Replies, bounces and auto-replies end to end: the five services as processes, with the
thread-watcher reading a real IMAP mailbox (Dovecot, IDLE) into which the tests APPEND what a
customer or a mail server would send back."""

from __future__ import annotations

import asyncio
import uuid
import sys
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import text

from sequences.db import create_engine
from sequences.devstack.dovecot import Dovecot, dovecot_binary
from sequences.devstack.stack import Stack
from services.thread_watcher.devmail import auto_reply_to, bounce_of, reply_to
from tests.e2e.test_flow import SEQUENCE, mail_to, new_contact
from tests.e2e.test_metrics import scrape, total
from tests.support import eventually, nothing_pending, stack_config

WATCHED = ("ReplyDetected", "BounceDetected", "AutoReplyDetected")


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory):
    if dovecot_binary() is None:
        pytest.skip("Dovecot is not installed (apt-get install dovecot-imapd; .ci/run does)")
    with Dovecot(tmp_path_factory.mktemp("dovecot"), password="s3cret/pw") as server:
        yield server


@pytest.fixture(scope="module")
def stack(tmp_path_factory, dovecot):
    """The whole system; its thread-watcher reads the Dovecot mailbox instead of the Maildir."""
    mailbox = dovecot.url_for(dovecot.user, "?folders=INBOX,Bounces")
    config = stack_config(tmp_path_factory,
                          service_env={"thread-watcher": {"WATCH_MAILBOXES": mailbox}})
    with Stack(config) as running:
        yield running


async def query(stack, sql: str, **params) -> list[tuple]:
    engine = create_engine(stack.database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return [tuple(row) for row in await conn.execute(text(sql), params)]
    finally:
        await engine.dispose()


async def enroll(stack, api, sequence_id: str, **fields):
    """A new contact (of `fields`) enrolled; returns its enrollment id, address and the first
    email, once the thread-watcher knows that email (a reply can only be matched to mail it
    knows)."""
    # a company of its own: a colleague's reply in another test would stop it (issue 13 item 4)
    fields = {"company": f"한빛상사-{uuid.uuid4().hex[:6]}", **fields}
    contact_id, email = await new_contact(api, **fields)
    email = fields.get("email", email)
    enrolled = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                              json={"contact_id": contact_id})
    assert enrolled.status_code == 201, enrolled.text

    async def first_email_known():
        sent = mail_to(stack, email)
        return sent and await query(stack, "SELECT 1 FROM watcher.sent_messages WHERE"
                                           " message_id = :id", id=sent[0]["Message-ID"]) and sent[0]

    return enrolled.json()["id"], email, await eventually(first_email_known, timeout=30)


async def status_of(api, enrollment_id: str) -> str:
    return (await api.get(f"/v1/enrollments/{enrollment_id}")).json()["status"]


async def becomes(api, enrollment_id: str, status: str) -> None:
    async def reached():
        return await status_of(api, enrollment_id) == status

    await eventually(reached, timeout=30)


async def deliver(dovecot, raw: bytes, folder: str = "INBOX") -> None:
    await asyncio.to_thread(dovecot.append, dovecot.user, raw, folder)


async def watched_events(stack) -> list[tuple[str, str]]:
    return await query(stack, "SELECT type, stream_id FROM eventlog.events"
                              " WHERE type = ANY(:types)", types=list(WATCHED))


@pytest.fixture(scope="module")
def sequence_id(stack):
    created = httpx.post(f"{stack.gateway_url}/v1/sequences", json=SEQUENCE, timeout=30,
                         headers=stack.api_headers)
    assert created.status_code == 201, created.text
    return created.json()["id"]


def now() -> datetime:
    return datetime.now(UTC)


async def test_a_reply_stops_the_enrollment_and_its_next_step_never_goes_out(
        stack, api, dovecot, sequence_id):
    replied_id, replied_email, first = await enroll(stack, api, sequence_id)
    control_id, control_email, _ = await enroll(stack, api, sequence_id)

    await deliver(dovecot, reply_to(first, now(), "네, 검토했습니다. 통화 가능하세요?"))
    await becomes(api, replied_id, "replied")

    async def counted_as_a_reply():  # the Overview dashboard's replies per minute
        return total(await scrape(stack), "sequences_inbound_messages_total",
                     decision="reply") >= 1
    await eventually(counted_as_a_reply, timeout=30, interval=0.5)
    await nothing_pending(stack.database_url, replied_id)

    # two days later the control enrollment gets its second email; the replied one gets none
    assert (await api.post("/v1/dev/clock/advance", json={"by": "2d"})).status_code == 200
    await becomes(api, control_id, "done")
    assert len(mail_to(stack, control_email)) == 2
    assert len(mail_to(stack, replied_email)) == 1
    assert await status_of(api, replied_id) == "replied"


async def test_a_bounce_in_the_bounces_folder_marks_the_enrollment_bounced(
        stack, api, dovecot, sequence_id):
    enrollment_id, _, first = await enroll(stack, api, sequence_id)
    await deliver(dovecot, bounce_of(first, now()), "Bounces")
    await becomes(api, enrollment_id, "bounced")
    [found] = await query(stack, "SELECT data->>'kind', data->>'bounce_class', data->>'reason',"
                                 " data->>'rule' FROM eventlog.events WHERE stream_id = :s AND"
                                 " type = 'BounceDetected'", s=f"bounce-{enrollment_id}")
    assert found == ("hard", "recipient-permanent", "user-unknown", "user-unknown")


async def test_an_out_of_office_answer_pauses_the_enrollment_and_does_not_end_it(
        stack, api, dovecot, sequence_id):
    enrollment_id, email, first = await enroll(stack, api, sequence_id)
    await deliver(dovecot, auto_reply_to(first, now()))  # back in three days

    async def paused():
        return (await api.get(f"/v1/enrollments/{enrollment_id}")).json()["paused_until"]

    await eventually(paused, timeout=30)
    assert ("AutoReplyDetected", f"inbox-{enrollment_id}") in await watched_events(stack)
    assert await status_of(api, enrollment_id) == "active"
    # (tests/e2e/test_reply_rules.py holds the step to its return date; here: it goes after)
    assert (await api.post("/v1/dev/clock/advance", json={"by": "6d"})).status_code == 200
    await becomes(api, enrollment_id, "done")
    assert len(mail_to(stack, email)) == 2


async def test_a_restarted_watcher_emits_no_event_twice_and_reports_its_mailbox(
        stack, api, dovecot, sequence_id):
    before = await watched_events(stack)
    assert len(before) >= 3, "the tests above leave a reply, a bounce and an auto-reply"
    stack.kill_service("thread-watcher")
    stack.start_service("thread-watcher", extra_env=stack.config.service_env["thread-watcher"])

    enrollment_id, _, first = await enroll(stack, api, sequence_id)
    await deliver(dovecot, reply_to(first, now()))
    await becomes(api, enrollment_id, "replied")
    after = await watched_events(stack)
    assert sorted(after) == sorted([*before, ("ReplyDetected", f"inbox-{enrollment_id}")])
    assert len(set(after)) == len(after)

    [health] = (await api.get("/v1/mailboxes/health")).json()
    assert (health["healthy"], health["idle"], health["folders"]) == (
        True, True, ["INBOX", "Bounces"])
    assert health["mailbox"] == f"imap://{dovecot.user}@127.0.0.1:{dovecot.port}"
    assert "s3cret" not in str(health)


async def test_the_dev_mailbox_takes_a_reply_dropped_with_the_command(stack, api, sequence_id):
    """What `sequences up` does: the watcher reads a Maildir, and a person answers a captured
    email with `sequences mail drop-reply`."""
    stack.kill_service("thread-watcher")
    stack.start_service("thread-watcher",
                        extra_env={"WATCH_MAILBOXES": f"maildir://{stack.mailbox_dir}"})
    enrollment_id, _, first = await enroll(stack, api, sequence_id)
    dropped = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sequences.cli", "mail", "drop-reply", "--message-id",
        first["Message-ID"], "--text", "좋습니다", "--data-dir", str(stack.config.data_dir),
        stdout=asyncio.subprocess.PIPE)
    output, _ = await dropped.communicate()
    assert dropped.returncode == 0 and f"reply to {first['Message-ID']}" in output.decode()
    await becomes(api, enrollment_id, "replied")
    [(excerpt,)] = await query(stack, "SELECT data->>'excerpt' FROM eventlog.events WHERE"
                                      " stream_id = :s", s=f"inbox-{enrollment_id}")
    assert excerpt.startswith("좋습니다")


async def test_a_reply_that_came_while_the_watcher_was_down_is_matched_when_it_is_back(
        stack, api, dovecot, sequence_id):
    stack.kill_service("thread-watcher")
    contact_id, email = await new_contact(api)
    enrolled = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                              json={"contact_id": contact_id})

    async def sent():
        return mail_to(stack, email)

    [first] = await eventually(sent, timeout=30)
    await deliver(dovecot, reply_to(first, now(), "답장드립니다"))
    # back up: its backlog of sent mail must be known before the mailbox is read
    stack.start_service("thread-watcher", extra_env=stack.config.service_env["thread-watcher"])
    await becomes(api, enrolled.json()["id"], "replied")
