"""The enrollment service's read models: sequences, contacts and enrollments as the API shows them."""

from __future__ import annotations

import json

from sqlalchemy import text

from contracts.events import (
    ContactCreated,
    ContactEnrolled,
    EnrollmentBounced,
    EnrollmentCompleted,
    EnrollmentReplied,
    EnrollmentStepCompleted,
    EnrollmentStopped,
    SequenceArchived,
    SequenceCreated,
    SequencePaused,
    SequenceResumed,
    SequenceStepsChanged,
)
from contracts.views import EnrollmentStatus
from sequences.messaging.consumer import Delivery, Subscription
from sequences.projections import Projection

projector = Subscription(
    "enrollment-projector", ["sequence", "contact", "enrollment"], rebuildable=True
)
PROJECTION = Projection(
    projector, ("enrollment.sequences", "enrollment.contacts", "enrollment.enrollments")
)


@projector.on(SequenceCreated)
async def sequence_created(event: SequenceCreated, d: Delivery) -> None:
    await d.conn.execute(
        text(
            "INSERT INTO enrollment.sequences (sequence_id, name, purpose, sender_name,"
            " sender_email, timezone, send_policy, steps, state, created_at)"
            " VALUES (:id, :name, :purpose, :sender_name, :sender_email, :timezone,"
            " CAST(:send_policy AS jsonb), CAST(:steps AS jsonb), 'live', :at)"
        ),
        {
            "id": event.sequence_id,
            "name": event.name,
            "purpose": event.purpose,
            "sender_name": event.sender_name,
            "sender_email": event.sender_email,
            "timezone": event.timezone,
            "send_policy": event.send_policy.model_dump_json(),
            "steps": json.dumps([s.model_dump(mode="json") for s in event.steps]),
            "at": d.envelope.occurred_at,
        },
    )


@projector.on(SequenceStepsChanged)
async def steps_changed(event: SequenceStepsChanged, d: Delivery) -> None:
    await d.conn.execute(
        text("UPDATE enrollment.sequences SET steps = CAST(:steps AS jsonb) WHERE sequence_id = :id"),
        {"id": event.sequence_id,
         "steps": json.dumps([s.model_dump(mode="json") for s in event.steps])},
    )


_SEQUENCE_STATES = {SequencePaused: "paused", SequenceResumed: "live", SequenceArchived: "archived"}


async def sequence_state_changed(event, d: Delivery) -> None:
    await d.conn.execute(
        text("UPDATE enrollment.sequences SET state = :state WHERE sequence_id = :id"),
        {"id": event.sequence_id, "state": _SEQUENCE_STATES[type(event)]},
    )


for _change in _SEQUENCE_STATES:
    projector.on(_change)(sequence_state_changed)


@projector.on(ContactCreated)
async def contact_created(event: ContactCreated, d: Delivery) -> None:
    await d.conn.execute(
        text(
            "INSERT INTO enrollment.contacts (contact_id, name, company, job_title, owner_name,"
            " email, phone, created_at) VALUES (:contact_id, :name, :company, :job_title,"
            " :owner_name, :email, :phone, :at)"
        ),
        {**event.model_dump(), "at": d.envelope.occurred_at},
    )


@projector.on(ContactEnrolled)
async def contact_enrolled(event: ContactEnrolled, d: Delivery) -> None:
    await d.conn.execute(
        text(
            "INSERT INTO enrollment.enrollments (enrollment_id, sequence_id, contact_id, status,"
            " current_step, sends, enrolled_at, last_activity_at)"
            " VALUES (:enrollment_id, :sequence_id, :contact_id, :status, 0, 0, :at, :at)"
        ),
        {
            "enrollment_id": event.enrollment_id,
            "sequence_id": event.sequence_id,
            "contact_id": event.contact_id,
            "status": EnrollmentStatus.active,
            "at": event.enrolled_at,
        },
    )
    await d.conn.execute(
        text("UPDATE enrollment.sequences SET enrolled = enrolled + 1 WHERE sequence_id = :id"),
        {"id": event.sequence_id},
    )


@projector.on(EnrollmentStepCompleted)
async def step_completed(event: EnrollmentStepCompleted, d: Delivery) -> None:
    await d.conn.execute(
        text(
            "UPDATE enrollment.enrollments SET current_step = current_step + 1,"
            " sends = sends + :sent, last_activity_at = :at WHERE enrollment_id = :id"
        ),
        {
            "id": event.enrollment_id,
            "sent": int(event.channel == "email"),
            "at": event.completed_at,
        },
    )


_ENDINGS = {
    EnrollmentCompleted: (EnrollmentStatus.done, "completed_at"),
    EnrollmentReplied: (EnrollmentStatus.replied, "replied_at"),
    EnrollmentBounced: (EnrollmentStatus.bounced, "bounced_at"),
    EnrollmentStopped: (EnrollmentStatus.stopped, "stopped_at"),
}


async def enrollment_ended(event, d: Delivery) -> None:
    status, moment = _ENDINGS[type(event)]
    await d.conn.execute(
        text(
            "UPDATE enrollment.enrollments SET status = :status, last_activity_at = :at"
            " WHERE enrollment_id = :id"
        ),
        {"id": event.enrollment_id, "status": status, "at": getattr(event, moment)},
    )


for _ending in _ENDINGS:
    projector.on(_ending)(enrollment_ended)
