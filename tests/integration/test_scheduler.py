"""The scheduler's planning and firing against a real PostgreSQL (handlers driven directly)."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import text

from contracts.events import (ContactEnrolled, EnrollmentReplied, EnrollmentStepCompleted,
                              SequenceCreated)
from sequences.bootstrap import Runtime
from sequences.clock import FixedClock
from sequences.eventlog.store import Append, Causation, EventStore
from sequences.messaging.consumer import HandBack, NotReady, Outcome, apply_in, handle_once
from services.scheduler.handlers import SchedulerHandlers, subscription
from tests.support import TEST_WORKSPACE

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _scheduler(engine):
    clock = FixedClock(NOW)
    runtime = Runtime("scheduler", SimpleNamespace(scheduler_max_rate=1000,
                                                   scheduler_tick_seconds=0.1),
                      engine, None, None, clock, EventStore(clock))
    handlers = SchedulerHandlers(runtime, batch_size=2)
    return SimpleNamespace(handlers=handlers, planner=subscription(handlers), clock=clock,
                           runtime=runtime)


@pytest.fixture
def scheduler(engine):
    return _scheduler(engine)


async def feed(scheduler, *events):
    """Append events to the log and hand them to the planner, as its consumer would."""
    async with scheduler.runtime.engine.begin() as conn:
        envelopes = await scheduler.runtime.store.append(
            conn, [Append(e.stream_id(), None, [e]) for e in events], Causation.new(TEST_WORKSPACE))
        await apply_in(conn, scheduler.planner, envelopes)


def sequence(wait_days: int, steps: int = 1, **settings) -> SequenceCreated:
    return SequenceCreated(
        sequence_id=uuid.uuid4(), name="s", sender_name="n", sender_email="a@b.co",
        timezone="Asia/Seoul", **({"send_policy": {"mode": "as_soon_as_due"}} | settings),
        steps=[{"channel": "email", "subject": "s", "body": "b", "wait_days": wait_days}]
        + [{"channel": "email", "body": "b", "wait_days": wait_days}] * (steps - 1))


def enrolled(sequence_id, at: datetime) -> ContactEnrolled:
    return ContactEnrolled(enrollment_id=uuid.uuid4(), sequence_id=sequence_id,
                           contact_id=uuid.uuid4(), enrolled_at=at, email="c@d.co")


async def step_dues(engine) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(text(
            "SELECT data->>'due_at' FROM eventlog.events WHERE type = 'StepDue' ORDER BY position"))
        return [row[0] for row in rows]


async def test_a_scheduler_catching_up_fires_in_due_order_a_bounded_batch_at_a_time(scheduler, engine):
    created = sequence(0)
    await feed(scheduler, created)
    hours_ago = [5, 1, 9, 3, 7]  # enrolled while the scheduler was down, fed in no order
    await feed(scheduler, *(enrolled(created.sequence_id, NOW - timedelta(hours=h))
                            for h in hours_ago))
    fired = [await scheduler.handlers.fire_due() for _ in range(4)]
    assert fired == [2, 2, 1, 0]  # never more than a batch per claim
    dues = await step_dues(engine)
    assert dues == sorted(dues) and len(dues) == 5


async def test_a_step_whose_enrollment_ended_just_before_it_fell_due_never_fires(scheduler, engine):
    created = sequence(1)
    enrollment = enrolled(created.sequence_id, NOW)
    await feed(scheduler, created, enrollment)
    scheduler.clock.advance(timedelta(days=1, seconds=-1))
    await feed(scheduler, EnrollmentReplied(enrollment_id=enrollment.enrollment_id,
                                            reply_message_id="<r@x>", replied_at=NOW))
    scheduler.clock.advance(timedelta(seconds=2))
    assert await scheduler.handlers.fire_due() == 0
    assert await step_dues(engine) == []


async def logged(scheduler, *events):
    """The events appended to the log (each after what its stream has), not handled."""
    async with scheduler.runtime.engine.begin() as conn:
        return [envelope for e in events for envelope in await scheduler.runtime.store.append(
            conn, [Append(e.stream_id(), None, [e])], Causation.new(TEST_WORKSPACE))]


async def one_by_one(scheduler, envelopes) -> list:
    """As the consumer handles a batch after a failure: each event in its own transaction, one
    not ready waiting for its next delivery."""
    outcomes = []
    for envelope in envelopes:
        try:
            [outcome] = await handle_once(scheduler.runtime.engine, scheduler.planner, [envelope])
        except NotReady:
            outcome = "not ready"
        outcomes.append(outcome)
    return outcomes


async def together(scheduler, envelopes) -> list:
    """As the consumer handles a fetched batch: all of it in one transaction."""
    return await handle_once(scheduler.runtime.engine, scheduler.planner, envelopes)


async def planner_state(engine) -> dict:
    """The planner's rows, and the StepScheduled events it appended, per stream in order (the
    order of different streams' events in the log is not a promise)."""
    async with engine.connect() as conn:
        return {
            "enrollments": (await conn.execute(text(
                "SELECT * FROM scheduler.enrollments ORDER BY enrollment_id"))).all(),
            "due_steps": (await conn.execute(text(
                "SELECT * FROM scheduler.due_steps ORDER BY enrollment_id, step_index"))).all(),
            "scheduled": (await conn.execute(text(
                "SELECT stream_id, version, data, correlation_id, causation_id, workspace_id"
                " FROM eventlog.events WHERE type = 'StepScheduled'"
                " ORDER BY stream_id, version"))).all(),
            "positions": (await conn.execute(text(
                "SELECT stream_id, version FROM eventlog.consumer_positions"
                " WHERE consumer = 'scheduler-planner' ORDER BY stream_id"))).all(),
        }


async def test_a_batch_of_enrollments_and_completions_plans_what_one_at_a_time_plans(
        engine, other_engine):
    batched, single = _scheduler(engine), _scheduler(other_engine)
    soon = sequence(0, steps=3)
    later = sequence(2, steps=3, send_policy={"mode": "send_time", "send_time": "09:30"},
                     zone_mode="contact")
    unknown = sequence(1)  # not seen by the scheduler until the end
    a, b, c = (enrolled(soon.sequence_id, NOW) for _ in range(3))
    d = enrolled(later.sequence_id, NOW).model_copy(update={"contact_timezone": "Europe/Paris"})
    stray = enrolled(unknown.sequence_id, NOW)

    def completed(enrollment, index, minutes):
        steps = soon.steps if enrollment.sequence_id == soon.sequence_id else later.steps
        return EnrollmentStepCompleted(
            enrollment_id=enrollment.enrollment_id, step_id=steps[index].step_id,
            step_index=index, channel="email", completed_at=NOW + timedelta(minutes=minutes))

    # the envelopes come from one log; both schedulers get the very same ones
    [*sequences] = await logged(batched, soon, later)
    enrollments = await logged(batched, a, b, stray, c, d)
    steps = await logged(batched, completed(a, 0, 1), completed(d, 0, 2), completed(d, 1, 3),
                         completed(stray, 0, 4), completed(b, 0, 5))
    ended = await logged(batched, EnrollmentReplied(enrollment_id=c.enrollment_id,
                                                    reply_message_id="<r@x>", replied_at=NOW))
    late_sequence = await logged(batched, unknown)

    redelivered = enrollments[0]
    batches = [sequences, [*enrollments, redelivered], [*steps, redelivered, *ended],
               [*ended, steps[1]]]
    for envelopes in batches:
        outcomes = await together(batched, envelopes)
        singles = await one_by_one(single, envelopes)
        # handed back where one at a time is not ready (or early, behind the one that was not)
        assert [o if o in (Outcome.applied, Outcome.duplicate) else "waits" for o in outcomes] \
            == [o if o in (Outcome.applied, Outcome.duplicate) else "waits" for o in singles]
        assert await planner_state(engine) == await planner_state(other_engine)
    stray_back = (await together(batched, enrollments))[2]
    assert isinstance(stray_back, HandBack) and stray_back.event_id == enrollments[2].event_id

    # the stray's sequence arrives: its enrollment and its completion come again, and are planned
    for envelopes in (late_sequence, [enrollments[2], steps[3]]):
        await together(batched, envelopes)
        await one_by_one(single, envelopes)
    state = await planner_state(engine)
    assert state == await planner_state(other_engine)
    assert {row.enrollment_id for row in state["enrollments"]} \
        == {e.enrollment_id for e in (a, b, c, d, stray)}
    # every enrollment's StepScheduled: on enrollment and after each completion, none for the
    # replied one after it ended, d's second step planned from its first one's plan
    by_stream = Counter(row.stream_id for row in state["scheduled"])
    assert sorted(by_stream.values()) == [1, 2, 2, 2, 3]
    d_steps = [row.data for row in state["scheduled"]
               if row.stream_id == f"schedule-{d.enrollment_id}"]
    assert [s["step_index"] for s in d_steps] == [0, 1, 2]
    assert {s["zone"] for s in d_steps} == {"Europe/Paris"}
    assert [row.state for row in state["due_steps"] if row.enrollment_id == c.enrollment_id] \
        == ["cancelled"]
