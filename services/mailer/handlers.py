"""Mailer handlers: keep what rendering needs, and turn each due email step into one sent email.

Sent once: the handler runs inside the consumer's transaction, which holds the lock on this
enrollment's schedule stream position. A redelivered StepDue finds the position moved and does
nothing; a second replica waits on the lock, then does nothing. A crash before the commit rolls
everything back and the step is sent again: the one window left is a crash after the SMTP server
accepted the message and before the commit (see the README, "Guarantees").
"""

from __future__ import annotations

import json
import logging
from zoneinfo import ZoneInfo

from sqlalchemy import text

from contracts.events import (
    ContactCreated,
    ContactOptedOut,
    ContactUpdated,
    EmailSent,
    EnrollmentBounced,
    EnrollmentReplied,
    EnrollmentStopped,
    SequenceCreated,
    SequenceStepsChanged,
    StepDue,
)
from contracts.values import Channel
from sequences.bootstrap import Runtime
from sequences.eventlog.store import ANY_VERSION, Append
from sequences.faults import crash_point
from sequences.messaging.consumer import Delivery, NotReady, Subscription
from sequences.tracing import tracer
from services.mailer.adapters import SmtpSender
from services.mailer.domain import (
    OutgoingEmail,
    PreviousEmail,
    build_message,
    html_body_for,
    message_id_for,
    render,
    thread_for,
)

log = logging.getLogger(__name__)
_MERGE_FIELDS = ("name", "company", "job_title", "owner_name")
_tracer = tracer(__name__)


class MailerHandlers:
    def __init__(self, runtime: Runtime, smtp: SmtpSender):
        self.runtime = runtime
        self.smtp = smtp

    async def on_sequence_created(self, event: SequenceCreated, d: Delivery) -> None:
        await d.conn.execute(
            text(
                "INSERT INTO mailer.sequences (sequence_id, sender_name, sender_email, timezone,"
                " steps) VALUES (:id, :name, :email, :timezone, CAST(:steps AS jsonb))"
                " ON CONFLICT (sequence_id) DO NOTHING"
            ),
            {
                "id": event.sequence_id,
                "name": event.sender_name,
                "email": event.sender_email,
                "timezone": event.timezone,
                "steps": json.dumps([s.model_dump(mode="json") for s in event.steps]),
            },
        )

    async def on_steps_changed(self, event: SequenceStepsChanged, d: Delivery) -> None:
        await d.conn.execute(
            text("UPDATE mailer.sequences SET steps = CAST(:steps AS jsonb) WHERE sequence_id = :id"),
            {"id": event.sequence_id,
             "steps": json.dumps([s.model_dump(mode="json") for s in event.steps])},
        )

    async def on_contact_created(self, event: ContactCreated, d: Delivery) -> None:
        values = event.model_dump(include=set(_MERGE_FIELDS))
        await d.conn.execute(
            text(
                "INSERT INTO mailer.contacts (contact_id, email, merge_values)"
                " VALUES (:id, :email, CAST(:values AS jsonb))"
                " ON CONFLICT (contact_id) DO NOTHING"
            ),
            {"id": event.contact_id, "email": event.email, "values": json.dumps(values)},
        )

    async def on_contact_updated(self, event: ContactUpdated, d: Delivery) -> None:
        merge = {k: v for k, v in event.changes.items() if k in _MERGE_FIELDS}
        await d.conn.execute(
            text("UPDATE mailer.contacts SET email = coalesce(:email, email),"
                 " merge_values = merge_values || CAST(:merge AS jsonb) WHERE contact_id = :id"),
            {"id": event.contact_id, "email": event.changes.get("email"),
             "merge": json.dumps(merge)},
        )

    async def on_contact_opted_out(self, event: ContactOptedOut, d: Delivery) -> None:
        """Never mailed again, whatever is already due."""
        await d.conn.execute(
            text("UPDATE mailer.contacts SET opted_out = true WHERE contact_id = :id"),
            {"id": event.contact_id},
        )

    async def on_enrollment_halted(self, event, d: Delivery) -> None:
        await d.conn.execute(
            text("INSERT INTO mailer.halted_enrollments (enrollment_id, reason)"
                 " VALUES (:id, :reason) ON CONFLICT DO NOTHING"),
            {"id": event.enrollment_id, "reason": event.type_name()},
        )

    async def on_step_due(self, event: StepDue, d: Delivery) -> None:
        if event.channel != Channel.email:
            return  # SMS and call steps become tasks for people (not the mailer's job)
        conn = d.conn
        blocked = await conn.execute(
            text("SELECT 1 FROM mailer.deliveries WHERE enrollment_id = :e AND step_id = :s"
                 " UNION ALL SELECT 1 FROM mailer.halted_enrollments WHERE enrollment_id = :e"),
            {"e": event.enrollment_id, "s": event.step_id},
        )
        if blocked.first() is not None:
            return  # sent already, or the enrollment ended meanwhile
        email = await self._compose(conn, event)
        if email is None:
            return  # the step was deleted after it fell due, or the contact opted out
        crash_point("mailer.before_smtp")
        with _tracer.start_as_current_span(
            "smtp.send",
            attributes={
                "enrollment_id": str(event.enrollment_id),
                "sequence_id": str(event.sequence_id),
                "step_index": event.step_index,
            },
        ):
            await self.smtp.send(build_message(email))
        crash_point("mailer.after_smtp")
        await self._record_sent(d, event, email)

    async def _compose(self, conn, event: StepDue) -> OutgoingEmail | None:
        sequence = (
            await conn.execute(
                text("SELECT sender_name, sender_email, timezone, steps FROM mailer.sequences"
                     " WHERE sequence_id = :id"),
                {"id": event.sequence_id},
            )
        ).first()
        contact = (
            await conn.execute(
                text("SELECT email, merge_values, opted_out FROM mailer.contacts"
                     " WHERE contact_id = :id"),
                {"id": event.contact_id},
            )
        ).first()
        if sequence is None or contact is None:
            raise NotReady("sequence or contact not seen yet")
        if contact.opted_out:
            return None
        previous = (
            await conn.execute(
                text('SELECT message_id, thread_subject, "references" FROM mailer.deliveries'
                     " WHERE enrollment_id = :e ORDER BY sent_at DESC, step_index DESC LIMIT 1"),
                {"e": event.enrollment_id},
            )
        ).first()
        step = next((s for s in sequence.steps if s["step_id"] == str(event.step_id)), None)
        if step is None:
            return None
        values = contact.merge_values
        subject = render(step["subject"], values) if step.get("subject") else None
        return OutgoingEmail(
            sender_name=sequence.sender_name,
            sender_email=sequence.sender_email,
            recipient=contact.email,
            thread=thread_for(
                subject,
                PreviousEmail(previous.message_id, previous.thread_subject,
                              tuple(previous.references)) if previous else None,
            ),
            text_body=render(step["body"], values),
            html_body=html_body_for(step["body"], values),
            message_id=message_id_for(event.enrollment_id, event.step_id,
                                      sequence.sender_email),
            date=self.runtime.clock.now().astimezone(ZoneInfo(sequence.timezone)),
        )

    async def _record_sent(self, d: Delivery, event: StepDue, email: OutgoingEmail) -> None:
        await d.conn.execute(
            text(
                'INSERT INTO mailer.deliveries (enrollment_id, step_id, step_index, message_id,'
                ' thread_subject, "references", recipient, sent_at) VALUES (:e, :step_id, :s,'
                " :message_id, :thread_subject, :references, :recipient, :at)"
            ),
            {
                "e": event.enrollment_id,
                "step_id": event.step_id,
                "s": event.step_index,
                "message_id": email.message_id,
                "thread_subject": email.thread.thread_subject,
                "references": list(email.thread.references),
                "recipient": email.recipient,
                "at": email.date,
            },
        )
        sent = EmailSent(
            enrollment_id=event.enrollment_id,
            sequence_id=event.sequence_id,
            contact_id=event.contact_id,
            step_id=event.step_id,
            step_index=event.step_index,
            message_id=email.message_id,
            recipient=email.recipient,
            subject=email.thread.subject,
            sent_at=email.date,
            in_reply_to=email.thread.in_reply_to,
            references=list(email.thread.references),
        )
        await self.runtime.store.append(
            d.conn, [Append(sent.stream_id(), ANY_VERSION, [sent])], d.causation
        )


def subscription(handlers: MailerHandlers) -> Subscription:
    mailer = Subscription("mailer", ["sequence", "contact", "enrollment", "schedule"])
    mailer.on(SequenceCreated)(handlers.on_sequence_created)
    mailer.on(SequenceStepsChanged)(handlers.on_steps_changed)
    mailer.on(ContactCreated)(handlers.on_contact_created)
    mailer.on(ContactUpdated)(handlers.on_contact_updated)
    mailer.on(ContactOptedOut)(handlers.on_contact_opted_out)
    mailer.on(StepDue)(handlers.on_step_due)
    for halt in (EnrollmentReplied, EnrollmentBounced, EnrollmentStopped):
        mailer.on(halt)(handlers.on_enrollment_halted)
    return mailer
