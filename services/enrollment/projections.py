"""The enrollment service's read models: sequences, contacts and enrollments as the API shows them.

Every table here is written only by these handlers, from events, so `sequences projections
rebuild` can empty them and replay the log to the same rows.
"""

from __future__ import annotations


from sqlalchemy import text

from contracts.events import (
    ContactCreated,
    ContactDeleted,
    ContactEnrolled,
    ContactOptedOut,
    ContactUpdated,
    EnrollmentBounced,
    EnrollmentCompleted,
    EnrollmentReplied,
    EmailOpened,
    EnrollmentNeedsAttention,
    EnrollmentRetried,
    EnrollmentStepCompleted,
    EnrollmentStopped,
    SequenceArchived,
    SequenceCreated,
    SequencePaused,
    SequenceResumed,
    SequenceStepsChanged,
    StepDue,
    StepScheduled,
    TaskCompleted,
    TaskDue,
)
from contracts.base import EventEnvelope
from contracts.values import steps_json
from contracts.views import EnrollmentStatus
from sequences.messaging.consumer import Delivery, Subscription
from sequences.projections import Projection

projector = Subscription(
    "enrollment-projector", ["sequence", "contact", "enrollment", "schedule", "delivery", "task"],
    rebuildable=True,
)
PROJECTION = Projection(
    projector, ("enrollment.sequences", "enrollment.contacts", "enrollment.enrollments",
                "enrollment.email_opens", "enrollment.tasks")
)



# --- sequences ---------------------------------------------------------------------------------


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
            "steps": steps_json(event.steps),
            "at": d.envelope.occurred_at,
        },
    )


@projector.on(SequenceStepsChanged)
async def steps_changed(event: SequenceStepsChanged, d: Delivery) -> None:
    await d.conn.execute(
        text("UPDATE enrollment.sequences SET steps = CAST(:steps AS jsonb) WHERE sequence_id = :id"),
        {"id": event.sequence_id, "steps": steps_json(event.steps)},
    )


_SEQUENCE_STATES = {SequencePaused: "paused", SequenceResumed: "live", SequenceArchived: "archived"}


async def sequence_state_changed(event, d: Delivery) -> None:
    await d.conn.execute(
        text("UPDATE enrollment.sequences SET state = :state WHERE sequence_id = :id"),
        {"id": event.sequence_id, "state": _SEQUENCE_STATES[type(event)]},
    )


for _change in _SEQUENCE_STATES:
    projector.on(_change)(sequence_state_changed)


# --- contacts ----------------------------------------------------------------------------------


@projector.on(ContactCreated)
async def contact_created(event: ContactCreated, d: Delivery) -> None:
    await d.conn.execute(
        text(
            "INSERT INTO enrollment.contacts (contact_id, name, company, job_title, owner_name,"
            " email, phone, status, tags, lists, created_at, updated_at)"
            " VALUES (:contact_id, :name, :company, :job_title, :owner_name, :email, :phone,"
            " :status, :tags, :lists, :at, :at)"
        ),
        {**event.model_dump(), "at": d.envelope.occurred_at},
    )


_CONTACT_COLUMNS = ("name", "company", "job_title", "owner_name", "email", "phone", "status",
                    "tags", "lists")


@projector.on(ContactUpdated)
async def contact_updated(event: ContactUpdated, d: Delivery) -> None:
    changes = {k: v for k, v in event.changes.items() if k in _CONTACT_COLUMNS}
    assignments = ", ".join(f"{column} = :{column}" for column in changes)
    await d.conn.execute(
        text(f"UPDATE enrollment.contacts SET {assignments}, updated_at = :at"
             " WHERE contact_id = :id"),
        {**changes, "id": event.contact_id, "at": d.envelope.occurred_at},
    )
    if "name" in changes or "email" in changes:
        await d.conn.execute(
            text("UPDATE enrollment.enrollments e SET contact_name = c.name,"
                 " contact_email = c.email FROM enrollment.contacts c"
                 " WHERE c.contact_id = :id AND e.contact_id = :id"),
            {"id": event.contact_id},
        )


@projector.on(ContactDeleted)
async def contact_deleted(event: ContactDeleted, d: Delivery) -> None:
    await d.conn.execute(
        text("UPDATE enrollment.contacts SET deleted = true, updated_at = :at"
             " WHERE contact_id = :id"),
        {"id": event.contact_id, "at": event.deleted_at},
    )


@projector.on(ContactOptedOut)
async def contact_opted_out(event: ContactOptedOut, d: Delivery) -> None:
    await d.conn.execute(
        text("UPDATE enrollment.contacts SET opted_out = true, updated_at = :at"
             " WHERE contact_id = :id"),
        {"id": event.contact_id, "at": event.opted_out_at},
    )


# --- enrollments -------------------------------------------------------------------------------


@projector.on_batch(ContactEnrolled)
async def contacts_enrolled(run: list[tuple[ContactEnrolled, EventEnvelope]], conn) -> None:
    """Set-based: a bulk enrollment of 100,000 is two statements, not 200,000."""
    events = [event for event, _ in run]
    await conn.execute(
        text(
            "INSERT INTO enrollment.enrollments (enrollment_id, sequence_id, contact_id, attempt,"
            " email, contact_name, contact_email, status, current_step, sends, enrolled_at,"
            " last_activity_at)"
            " SELECT v.enrollment_id, v.sequence_id, v.contact_id, v.attempt, v.email, c.name,"
            " c.email, 'active', 0, 0, v.at, v.at"
            " FROM unnest(CAST(:ids AS uuid[]), CAST(:sequences AS uuid[]),"
            "   CAST(:contacts AS uuid[]), CAST(:attempts AS integer[]), CAST(:emails AS text[]),"
            "   CAST(:ats AS timestamptz[]))"
            "   AS v(enrollment_id, sequence_id, contact_id, attempt, email, at)"
            " JOIN enrollment.contacts c ON c.contact_id = v.contact_id"
        ),
        {
            "ids": [e.enrollment_id for e in events],
            "sequences": [e.sequence_id for e in events],
            "contacts": [e.contact_id for e in events],
            "attempts": [e.attempt for e in events],
            "emails": [e.email for e in events],
            "ats": [e.enrolled_at for e in events],
        },
    )
    await conn.execute(
        text("UPDATE enrollment.sequences s SET enrolled = enrolled + n.count"
             " FROM (SELECT id, count(*) FROM unnest(CAST(:sequences AS uuid[])) AS id"
             "       GROUP BY id) AS n WHERE s.sequence_id = n.id"),
        {"sequences": [e.sequence_id for e in events]},
    )


@projector.on(EnrollmentStepCompleted)
async def step_completed(event: EnrollmentStepCompleted, d: Delivery) -> None:
    await d.conn.execute(
        text(
            "UPDATE enrollment.enrollments SET current_step = current_step + 1,"
            " sends = sends + :sent, last_activity_at = :at WHERE enrollment_id = :id"
        ),
        {"id": event.enrollment_id, "sent": int(event.channel == "email"),
         "at": event.completed_at},
    )


_ENDINGS = {
    EnrollmentCompleted: (EnrollmentStatus.done, "completed_at", lambda e: None),
    EnrollmentReplied: (EnrollmentStatus.replied, "replied_at", lambda e: "replied"),
    EnrollmentBounced: (EnrollmentStatus.bounced, "bounced_at", lambda e: e.reason),
    EnrollmentStopped: (EnrollmentStatus.stopped, "stopped_at", lambda e: e.reason or "stopped"),
}


async def enrollment_ended(event, d: Delivery) -> None:
    status, moment, reason = _ENDINGS[type(event)]
    await d.conn.execute(
        text(
            "UPDATE enrollment.enrollments SET status = :status, last_activity_at = :at,"
            " next_due_at = NULL, held = false, attention = NULL, ended_reason = :reason"
            " WHERE enrollment_id = :id"
        ),
        {"id": event.enrollment_id, "status": status, "at": getattr(event, moment),
         "reason": reason(event)},
    )


for _ending in _ENDINGS:
    projector.on(_ending)(enrollment_ended)


@projector.on(EnrollmentNeedsAttention)
async def needs_attention(event: EnrollmentNeedsAttention, d: Delivery) -> None:
    await d.conn.execute(
        text("UPDATE enrollment.enrollments SET status = 'needs_attention', attention = :reason,"
             " next_due_at = NULL, last_activity_at = :at WHERE enrollment_id = :id"),
        {"id": event.enrollment_id, "reason": event.reason, "at": d.envelope.occurred_at},
    )


@projector.on(EnrollmentRetried)
async def retried(event: EnrollmentRetried, d: Delivery) -> None:
    await d.conn.execute(
        text("UPDATE enrollment.enrollments SET status = 'active', attention = NULL,"
             " last_activity_at = :at WHERE enrollment_id = :id"),
        {"id": event.enrollment_id, "at": event.retried_at},
    )


@projector.on(StepScheduled)
async def step_scheduled(event: StepScheduled, d: Delivery) -> None:
    await d.conn.execute(
        text("UPDATE enrollment.enrollments SET next_due_at = :due, held = :held,"
             " schedule_note = :note WHERE enrollment_id = :id AND status = 'active'"),
        {"id": event.enrollment_id, "due": event.due_at, "held": event.held,
         "note": event.reason},
    )


@projector.on(EmailOpened)
async def email_opened(event: EmailOpened, d: Delivery) -> None:
    first = await d.conn.execute(
        text("INSERT INTO enrollment.email_opens (enrollment_id, step_id, opens)"
             " VALUES (:e, :s, 1) ON CONFLICT (enrollment_id, step_id)"
             " DO UPDATE SET opens = enrollment.email_opens.opens + 1"
             " RETURNING opens = 1 AS first"),
        {"e": event.enrollment_id, "s": event.step_id},
    )
    await d.conn.execute(
        text("UPDATE enrollment.enrollments SET opens = opens + 1,"
             " unique_opens = unique_opens + :first WHERE enrollment_id = :id"),
        {"id": event.enrollment_id, "first": int(first.scalar_one())},
    )


@projector.on(TaskDue)
async def task_due(event: TaskDue, d: Delivery) -> None:
    await d.conn.execute(
        text("INSERT INTO enrollment.tasks (task_id, enrollment_id, sequence_id, contact_id,"
             " contact_name, step_id, step_index, owner_name, channel, instructions, due_at,"
             " state) SELECT :task_id, :enrollment_id, :sequence_id, :contact_id, c.name,"
             " :step_id, :step_index, :owner_name, :channel, :instructions, :due_at, 'open'"
             " FROM enrollment.contacts c WHERE c.contact_id = :contact_id"
             " ON CONFLICT (task_id) DO NOTHING"),
        event.model_dump(mode="json"),
    )


@projector.on(TaskCompleted)
async def task_completed(event: TaskCompleted, d: Delivery) -> None:
    await d.conn.execute(
        text("UPDATE enrollment.tasks SET state = :outcome, completed_at = :at"
             " WHERE task_id = :id"),
        {"id": event.task_id, "outcome": event.outcome, "at": event.completed_at},
    )


@projector.on(StepDue)
async def step_due(event: StepDue, d: Delivery) -> None:
    await d.conn.execute(
        text("UPDATE enrollment.enrollments SET next_due_at = NULL WHERE enrollment_id = :id"),
        {"id": event.enrollment_id},
    )
