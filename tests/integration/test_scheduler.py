"""The scheduler's planning and firing against a real PostgreSQL (handlers driven directly)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import text

from contracts.events import ContactEnrolled, EnrollmentReplied, SequenceCreated
from sequences.bootstrap import Runtime
from sequences.clock import FixedClock
from sequences.eventlog.store import Append, Causation, EventStore
from sequences.messaging.consumer import apply_in
from services.scheduler.handlers import SchedulerHandlers, subscription
from tests.support import TEST_WORKSPACE

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def scheduler(engine):
    clock = FixedClock(NOW)
    runtime = Runtime("scheduler", SimpleNamespace(scheduler_max_rate=1000,
                                                   scheduler_tick_seconds=0.1),
                      engine, None, None, clock, EventStore(clock))
    handlers = SchedulerHandlers(runtime, batch_size=2)
    return SimpleNamespace(handlers=handlers, planner=subscription(handlers), clock=clock,
                           runtime=runtime)


async def feed(scheduler, *events):
    """Append events to the log and hand them to the planner, as its consumer would."""
    async with scheduler.runtime.engine.begin() as conn:
        envelopes = await scheduler.runtime.store.append(
            conn, [Append(e.stream_id(), None, [e]) for e in events], Causation.new(TEST_WORKSPACE))
        await apply_in(conn, scheduler.planner, envelopes)


def sequence(wait_days: int) -> SequenceCreated:
    return SequenceCreated(
        sequence_id=uuid.uuid4(), name="s", sender_name="n", sender_email="a@b.co",
        timezone="Asia/Seoul", send_policy={"mode": "as_soon_as_due"},
        steps=[{"channel": "email", "subject": "s", "body": "b", "wait_days": wait_days}])


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
