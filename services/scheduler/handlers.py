"""Scheduler handlers: plan each enrollment's next step from its events, fire it when due."""

from __future__ import annotations

import json
import logging

from sqlalchemy import text

from contracts.events import (
    ContactEnrolled,
    EnrollmentBounced,
    EnrollmentCompleted,
    EnrollmentReplied,
    EnrollmentStopped,
    EnrollmentStepCompleted,
    SequenceCreated,
    StepDue,
)
from contracts.values import SendPolicy
from sequences.bootstrap import Runtime
from sequences.eventlog.store import ANY_VERSION, Append, Causation
from sequences.messaging.consumer import Delivery, NotReady, Subscription
from sequences.tracing import tracer
from services.scheduler.domain import due_at

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

_PLAN = text(
    """
    INSERT INTO scheduler.due_steps (enrollment_id, step_index, sequence_id, contact_id, channel,
                                     due_at, correlation_id, causation_id, traceparent)
    VALUES (:enrollment_id, :step_index, :sequence_id, :contact_id, :channel, :due_at,
            :correlation_id, :causation_id, :traceparent)
    ON CONFLICT (enrollment_id, step_index) DO NOTHING
    """
)
_CLAIM_DUE = text(
    """
    SELECT enrollment_id, step_index, sequence_id, contact_id, channel, due_at,
           correlation_id, causation_id, traceparent
    FROM scheduler.due_steps
    WHERE state = 'pending' AND due_at <= :now
    ORDER BY due_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)
_MARK_FIRED = text(
    "UPDATE scheduler.due_steps SET state = 'fired', fired_at = :now"
    " WHERE (enrollment_id, step_index) IN"
    " (SELECT * FROM unnest(CAST(:enrollment_ids AS uuid[]), CAST(:step_indexes AS integer[])))"
)


class SchedulerHandlers:
    def __init__(self, runtime: Runtime, batch_size: int = 500):
        self.runtime = runtime
        self.batch_size = batch_size
        self.fired = 0

    async def on_sequence_created(self, event: SequenceCreated, d: Delivery) -> None:
        await d.conn.execute(
            text(
                "INSERT INTO scheduler.sequences (sequence_id, timezone, send_policy, steps)"
                " VALUES (:id, :tz, CAST(:policy AS jsonb), CAST(:steps AS jsonb))"
                " ON CONFLICT (sequence_id) DO NOTHING"
            ),
            {
                "id": event.sequence_id,
                "tz": event.timezone,
                "policy": event.send_policy.model_dump_json(),
                "steps": json.dumps(
                    [{"channel": s.channel, "wait_days": s.wait_days} for s in event.steps]
                ),
            },
        )

    async def on_contact_enrolled(self, event: ContactEnrolled, d: Delivery) -> None:
        await self._plan(d, event.enrollment_id, event.sequence_id, event.contact_id, 0,
                         event.enrolled_at)

    async def on_step_completed(self, event: EnrollmentStepCompleted, d: Delivery) -> None:
        planned = (
            await d.conn.execute(
                text("SELECT sequence_id, contact_id FROM scheduler.due_steps"
                     " WHERE enrollment_id = :id AND step_index = :step"),
                {"id": event.enrollment_id, "step": event.step_index},
            )
        ).first()
        if planned is None:
            raise NotReady(f"step {event.step_index} of {event.enrollment_id} was never planned")
        await self._plan(d, event.enrollment_id, planned.sequence_id, planned.contact_id,
                         event.step_index + 1, event.completed_at)

    async def on_enrollment_ended(self, event, d: Delivery) -> None:
        """Done, replied, bounced or stopped: whatever was pending never fires."""
        await d.conn.execute(
            text("UPDATE scheduler.due_steps SET state = 'cancelled'"
                 " WHERE enrollment_id = :id AND state = 'pending'"),
            {"id": event.enrollment_id},
        )

    async def _plan(self, d: Delivery, enrollment_id, sequence_id, contact_id, step_index, anchor):
        sequence = (
            await d.conn.execute(
                text("SELECT timezone, send_policy, steps FROM scheduler.sequences"
                     " WHERE sequence_id = :id"),
                {"id": sequence_id},
            )
        ).first()
        if sequence is None:
            raise NotReady(f"sequence {sequence_id} not seen yet")
        if step_index >= len(sequence.steps):
            return  # that was the last step
        step = sequence.steps[step_index]
        when = due_at(anchor, step["wait_days"], sequence.timezone,
                      SendPolicy.model_validate(sequence.send_policy))
        await d.conn.execute(
            _PLAN,
            {
                "enrollment_id": enrollment_id,
                "step_index": step_index,
                "sequence_id": sequence_id,
                "contact_id": contact_id,
                "channel": step["channel"],
                "due_at": when,
                "correlation_id": d.envelope.correlation_id,
                "causation_id": d.envelope.event_id,
                "traceparent": d.envelope.traceparent,
            },
        )

    async def fire_due(self) -> int:
        """Claim due steps (skipping ones another replica holds) and append StepDue for each."""
        now = self.runtime.clock.now()
        async with self.runtime.engine.begin() as conn:
            rows = (await conn.execute(_CLAIM_DUE, {"now": now, "limit": self.batch_size})).all()
            if not rows:
                return 0
            with _tracer.start_as_current_span("scheduler.fire", attributes={"steps": len(rows)}):
                await self.runtime.store.append(conn, [_step_due(row) for row in rows],
                                                Causation.new())
            await conn.execute(
                _MARK_FIRED,
                {
                    "now": now,
                    "enrollment_ids": [r.enrollment_id for r in rows],
                    "step_indexes": [r.step_index for r in rows],
                },
            )
        self.fired += len(rows)
        return len(rows)

    async def run_firing(self) -> None:
        tick = self.runtime.settings.scheduler_tick_seconds
        while True:
            try:
                while await self.fire_due() == self.batch_size:
                    pass
            except Exception:
                log.exception("firing due steps failed; retrying")
            await self.runtime.clock.wait_for_change(tick)


def _step_due(row) -> Append:
    event = StepDue(
        enrollment_id=row.enrollment_id,
        sequence_id=row.sequence_id,
        contact_id=row.contact_id,
        step_index=row.step_index,
        channel=row.channel,
        due_at=row.due_at,
    )
    cause = Causation(row.correlation_id, row.causation_id, traceparent=row.traceparent)
    return Append(event.stream_id(), ANY_VERSION, [event], causation=cause)


def subscription(handlers: SchedulerHandlers) -> Subscription:
    planner = Subscription("scheduler-planner", ["sequence", "enrollment"])
    planner.on(SequenceCreated)(handlers.on_sequence_created)
    planner.on(ContactEnrolled)(handlers.on_contact_enrolled)
    planner.on(EnrollmentStepCompleted)(handlers.on_step_completed)
    for ending in (EnrollmentCompleted, EnrollmentReplied, EnrollmentBounced, EnrollmentStopped):
        planner.on(ending)(handlers.on_enrollment_ended)
    return planner
