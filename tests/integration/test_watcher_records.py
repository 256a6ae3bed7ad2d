"""What the thread-watcher keeps of the events (sent Message-IDs, ended enrollments): a fetched
batch handled at once keeps what handling its events one at a time keeps."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from contracts.events import EmailSent, EnrollmentCompleted, EnrollmentReplied
from sequences.clock import SystemClock
from sequences.eventlog.store import Append, Causation, EventStore
from sequences.messaging.consumer import Outcome, handle_once
from services.thread_watcher.handlers import enrollment_ends, watcher
from tests.support import TEST_WORKSPACE

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def sent(enrollment_id, step_index: int, message_id: str | None = None) -> EmailSent:
    return EmailSent(
        enrollment_id=enrollment_id, sequence_id=uuid.uuid4(), contact_id=uuid.uuid4(),
        step_id=uuid.uuid4(), step_index=step_index,
        message_id=message_id or f"<{uuid.uuid4()}@sales.example>", recipient="kim@client.example",
        subject=f"Quote {step_index}", sent_at=NOW + timedelta(minutes=step_index))


async def logged(engine, *events):
    async with engine.begin() as conn:
        store = EventStore(SystemClock())
        return [envelope for e in events for envelope in await store.append(
            conn, [Append(e.stream_id(), None, [e])], Causation.new(TEST_WORKSPACE))]


async def kept(engine) -> dict:
    async with engine.connect() as conn:
        return {
            "sent": (await conn.execute(text(
                "SELECT * FROM watcher.sent_messages ORDER BY message_id"))).all(),
            "ended": (await conn.execute(text(
                "SELECT * FROM watcher.ended_enrollments ORDER BY enrollment_id"))).all(),
        }


async def test_a_batch_of_sent_emails_and_endings_keeps_what_one_at_a_time_keeps(
        engine, other_engine):
    a, b = uuid.uuid4(), uuid.uuid4()
    first = sent(a, 0)
    emails = await logged(engine, first, sent(a, 1), sent(b, 0),
                          sent(b, 1, message_id=first.message_id))  # a Message-ID seen before
    ends = await logged(engine, EnrollmentReplied(enrollment_id=a, reply_message_id="<r@x>",
                                                  replied_at=NOW),
                        EnrollmentCompleted(enrollment_id=b, completed_at=NOW),
                        EnrollmentCompleted(enrollment_id=a, completed_at=NOW))
    for subscription, envelopes in ((watcher, [*emails, emails[0]]),  # one redelivered
                                    (enrollment_ends, [*ends, ends[1]])):
        together = await handle_once(engine, subscription, envelopes)
        singly = [outcome for envelope in envelopes
                  for outcome in await handle_once(other_engine, subscription, [envelope])]
        assert together == singly
        assert together[-1] is Outcome.duplicate
        assert await kept(engine) == await kept(other_engine)
    rows = await kept(engine)
    assert [r.subject for r in rows["sent"] if r.message_id == first.message_id] == ["Quote 0"]
    assert len(rows["sent"]) == 3
    assert {r.enrollment_id: r.ended_as for r in rows["ended"]} \
        == {a: "EnrollmentReplied", b: "EnrollmentCompleted"}  # an enrollment's first end
