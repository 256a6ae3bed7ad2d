"""The enrollment service's process consumer against a real PostgreSQL (handlers driven
directly): a batch of emails sent is handled as a set, and gives what one at a time gives."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from sqlalchemy import text

from contracts.events import (ContactCreated, ContactEnrolled, EmailSent, EnrollmentStopped,
                              SequenceCreated)
from sequences.bootstrap import Runtime
from sequences.clock import FixedClock
from sequences.eventlog.store import Append, Causation, EventStore
from sequences.messaging.consumer import HandBack, Outcome, handle_once
from services.enrollment.analytics import NO_STEP, analytics
from services.enrollment.handlers import EnrollmentCommands
from services.enrollment.process import EnrollmentProcess, process_subscription
from tests.support import TEST_WORKSPACE

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CAUSE = Causation(workspace_id=TEST_WORKSPACE, correlation_id=uuid.UUID(int=1))


def _service(engine):
    clock = FixedClock(NOW)
    runtime = Runtime("enrollment", SimpleNamespace(), engine, None, None, clock,
                      EventStore(clock))
    commands = EnrollmentCommands(runtime)
    return SimpleNamespace(commands=commands,
                           process=process_subscription(EnrollmentProcess(commands)))


SEQUENCE = SequenceCreated(
    sequence_id=uuid.uuid4(), name="s", sender_name="n", sender_email="a@b.co",
    timezone="Asia/Seoul", send_policy={"mode": "as_soon_as_due"},
    steps=[{"channel": "email", "subject": "s", "body": "b", "wait_days": 0}]
    + [{"channel": "email", "body": "b", "wait_days": 1}] * 2)


def _contact() -> tuple[ContactCreated, ContactEnrolled]:
    contact = ContactCreated(contact_id=uuid.uuid4(), email=f"{uuid.uuid4().hex[:8]}@d.co")
    return contact, ContactEnrolled(
        enrollment_id=uuid.uuid4(), sequence_id=SEQUENCE.sequence_id,
        contact_id=contact.contact_id, enrolled_at=NOW, email=contact.email)


async def recorded(service, *events) -> None:
    """Written as the commands write them: the append and the read models."""
    async with service.commands.runtime.engine.begin() as conn:
        await service.commands.record(conn, [Append(e.stream_id(), None, [e]) for e in events],
                                       CAUSE)


def sent(enrollment: ContactEnrolled, index: int) -> EmailSent:
    return EmailSent(enrollment_id=enrollment.enrollment_id, sequence_id=SEQUENCE.sequence_id,
                     contact_id=enrollment.contact_id, step_id=SEQUENCE.steps[index].step_id,
                     step_index=index, message_id=f"<{index}.{enrollment.enrollment_id}@x>",
                     recipient=enrollment.email, subject="s",
                     sent_at=NOW + timedelta(days=index, minutes=1))


async def logged(service, *events) -> list:
    """The events appended to the log (each after what its stream has), not handled."""
    async with service.commands.runtime.engine.begin() as conn:
        return [envelope for e in events for envelope in await service.commands.runtime.store.append(
            conn, [Append(e.stream_id(), None, [e])], CAUSE)]


async def together(service, envelopes) -> list:
    """As the consumer handles a fetched batch: all of it in one transaction."""
    return await handle_once(service.commands.runtime.engine, service.process, envelopes)


async def one_by_one(service, envelopes) -> list:
    """As the consumer handles a batch after a failure: each event in its own transaction."""
    return [(await handle_once(service.commands.runtime.engine, service.process, [e]))[0]
            for e in envelopes]


def waits(outcomes) -> list:
    return [o if o in (Outcome.applied, Outcome.duplicate) else "waits" for o in outcomes]


async def enrollment_state(engine) -> dict:
    """The enrollment streams' events (but their ids), the read models and the positions."""
    async with engine.connect() as conn:
        return {
            "events": (await conn.execute(text(
                "SELECT stream_id, version, type, data, correlation_id, causation_id,"
                " workspace_id FROM eventlog.events WHERE stream_id LIKE 'enrollment-%'"
                " ORDER BY stream_id, version"))).all(),
            "enrollments": (await conn.execute(text(
                "SELECT * FROM enrollment.enrollments ORDER BY enrollment_id"))).all(),
            "completions": (await conn.execute(text(
                "SELECT * FROM enrollment.step_completions"
                " ORDER BY enrollment_id, step_id"))).all(),
            "positions": (await conn.execute(text(
                "SELECT consumer, stream_id, version FROM eventlog.consumer_positions"
                " WHERE consumer LIKE 'enrollment-%' ORDER BY consumer, stream_id"))).all(),
        }


async def test_a_batch_of_emails_sent_records_what_one_at_a_time_records(engine, other_engine):
    batched, single = _service(engine), _service(other_engine)
    (ca, a), (cb, b), (cc, c), (cx, stray) = (_contact() for _ in range(4))
    for service in (batched, single):
        await recorded(service, SEQUENCE, ca, cb, cc, cx)
        await recorded(service, a, b, c)  # the stray's enrollment not yet

    # the envelopes come from one log; both services get the very same ones
    first = await logged(batched, sent(a, 0), sent(b, 0), sent(stray, 0), sent(a, 1), sent(c, 0))
    second = await logged(batched, sent(b, 1), sent(stray, 1), sent(a, 2), sent(b, 2))
    batches = [first, [first[0], *second], [first[2]]]
    for envelopes in batches:
        outcomes = await together(batched, envelopes)
        assert waits(outcomes) == waits(await one_by_one(single, envelopes))
        assert await enrollment_state(engine) == await enrollment_state(other_engine)
    assert isinstance(outcomes[0], HandBack) and outcomes[0].event_id == first[2].event_id

    # the stray's enrollment arrives: its emails come again, and are recorded
    for service in (batched, single):
        await recorded(service, stray)
    stray_emails = [first[2], second[1]]
    assert await together(batched, stray_emails) == [Outcome.applied] * 2
    assert await one_by_one(single, stray_emails) == [Outcome.applied] * 2
    state = await enrollment_state(engine)
    assert state == await enrollment_state(other_engine)
    # a and b done (a's second email of the first batch decided on what its first wrote),
    # c and the stray at their second step
    completed = [(row.stream_id, row.data["step_index"]) for row in state["events"]
                 if row.type == "EnrollmentStepCompleted"]
    assert sorted(completed) == sorted(
        [(f"enrollment-{e.enrollment_id}", i) for e, steps in ((a, 3), (b, 3), (c, 1), (stray, 2))
         for i in range(steps)])
    assert {row.enrollment_id: row.status for row in state["enrollments"]} == {
        a.enrollment_id: "done", b.enrollment_id: "done", c.enrollment_id: "active",
        stray.enrollment_id: "active"}


async def test_a_person_stopping_an_enrollment_meanwhile_loses_no_email_and_doubles_none(engine):
    service = _service(engine)
    (ca, a), (cb, b), (cc, c) = (_contact() for _ in range(3))
    await recorded(service, SEQUENCE, ca, cb, cc)
    await recorded(service, a, b, c)
    emails = await logged(service, sent(a, 0), sent(b, 0), sent(c, 0))
    store = service.commands.runtime.store
    read_streams, stops, reads = store.read_streams, [], []

    async def read_then_stop(conn, streams):
        """The batch's read, then a person stops b in another transaction before its append."""
        logs = await read_streams(conn, streams)
        reads.append(sorted(streams))
        if not stops:
            stops.append(EnrollmentStopped(enrollment_id=b.enrollment_id, stopped_at=NOW,
                                           reason="by hand"))
            async with engine.begin() as other:
                await service.commands.record(other, [Append(
                    stops[0].stream_id(), len(logs[stops[0].stream_id()]), stops)], CAUSE)
        return logs

    store.read_streams = read_then_stop
    assert await together(service, emails) == [Outcome.applied] * 3
    assert len(reads) == 2 and reads[0] == reads[1]  # the append lost the race: read again
    state = await enrollment_state(engine)
    by_stream = {}
    for row in state["events"]:
        by_stream.setdefault(row.stream_id, []).append(row.type)
    assert by_stream[f"enrollment-{a.enrollment_id}"] == ["ContactEnrolled",
                                                          "EnrollmentStepCompleted"]
    assert by_stream[f"enrollment-{b.enrollment_id}"] == ["ContactEnrolled", "EnrollmentStopped"]
    assert by_stream[f"enrollment-{c.enrollment_id}"] == ["ContactEnrolled",
                                                          "EnrollmentStepCompleted"]
    # every email's position moved once; a redelivery changes nothing
    assert await together(service, emails) == [Outcome.duplicate] * 3
    assert await enrollment_state(engine) == state


async def analytics_state(engine) -> dict:
    async with engine.connect() as conn:
        return {table: (await conn.execute(text(
            f"SELECT * FROM enrollment.{table} t ORDER BY t::text"))).all() for table in ("analytics_daily", "analytics_enrollments", "analytics_emails")}


async def test_the_analytics_count_a_batch_of_enrollments_and_emails_as_one_at_a_time(
        engine, other_engine):
    batched, single = _service(engine), _service(other_engine)
    (_, a), (_, b), (_, c) = (_contact() for _ in range(3))
    later = a.model_copy(update={"enrollment_id": uuid.uuid4(),
                                 "enrolled_at": NOW + timedelta(days=1)})
    enrollments = await logged(batched, a, b, later)
    emails = await logged(batched, sent(a, 0), sent(b, 0), sent(c, 0), sent(a, 1),
                          sent(b, 1).model_copy(update={"variant": "B"}))
    for envelopes in ([*enrollments, enrollments[0]], [*emails, emails[1]], emails[:2]):
        assert await handle_once(engine, analytics, envelopes) \
            == [(await handle_once(other_engine, analytics, [e]))[0] for e in envelopes]
        assert await analytics_state(engine) == await analytics_state(other_engine)
    state = await analytics_state(engine)
    counts = {(row.step_id, row.variant, row.metric, row.day.isoformat()): row.n
              for row in state["analytics_daily"]}
    day, steps = NOW.date().isoformat(), SEQUENCE.steps
    assert counts[(NO_STEP, "", "enrolled", day)] == 2
    assert counts[(steps[0].step_id, "", "sent", NOW.date().isoformat())] == 2
    # c was never enrolled here: its email is kept, not counted on any sequence
    assert len(state["analytics_emails"]) == 5 and sum(
        n for (_, _, metric, _), n in counts.items() if metric == "sent") == 4
    last = {row.enrollment_id: (row.last_step_id, row.variant)
            for row in state["analytics_enrollments"]}
    assert last[a.enrollment_id] == (steps[1].step_id, "")
    assert last[b.enrollment_id] == (steps[1].step_id, "B")


async def test_last_steps_completed_together_are_logged_as_one_run_of_each_type(engine):
    """Each enrollment's [EnrollmentStepCompleted, EnrollmentCompleted], in layers: every
    completion, then every ending (consumers take each run at once), each stream in order."""
    service = _service(engine)
    pairs = [_contact() for _ in range(3)]
    await recorded(service, SEQUENCE, *(contact for contact, _ in pairs))
    await recorded(service, *(enrollment for _, enrollment in pairs))
    for step in range(3):
        outcomes = await together(service, await logged(
            service, *(sent(enrollment, step) for _, enrollment in pairs)))
        assert outcomes == [Outcome.applied] * 3
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT stream_id, version, type FROM eventlog.events"
            " WHERE stream_id LIKE 'enrollment-%' ORDER BY position DESC LIMIT 6"))).all()
    rows.reverse()
    assert [row.type for row in rows] == ["EnrollmentStepCompleted"] * 3 \
        + ["EnrollmentCompleted"] * 3
    streams = [stream_id for stream_id, *_ in rows]
    assert streams[:3] == streams[3:]  # the same enrollments, in the same order
    assert all(later.version == earlier.version + 1
               for earlier, later in zip(rows[:3], rows[3:]))
    async with engine.connect() as conn:
        done = (await conn.execute(text(
            "SELECT count(*) FROM enrollment.enrollments WHERE status = 'done'"))).scalar_one()
    assert done == 3
