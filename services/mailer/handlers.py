"""Mailer handlers: keep what rendering needs, and turn each due email step into one sent email
(and each due SMS or call step into a task for its owner).

Sent once: due steps are handled a fetched batch at a time inside the consumer's transaction,
which holds the locks on their enrollments' schedule-stream positions, so a redelivered StepDue
or a second replica waits and then finds the step sent. Before talking to the SMTP server the
mailer commits the batch's send intents on a connection of its own; the transaction that records
the sends removes them. An intent found on a later attempt means the mailer died between the SMTP
server's acceptance and the record: it then asks the verifier whether the message arrived before
sending again (README, "Guarantees").
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import aiosmtplib
from sqlalchemy import text

from contracts.commands import PreviewStep, RecordEmailOpen, SendTestEmail
from contracts.events import (
    BounceDetected,
    ContactCreated,
    ContactOptedOut,
    ContactUpdated,
    EmailDeferred,
    EmailFailed,
    EmailHeld,
    EmailOpened,
    EmailSent,
    EnrollmentBounced,
    EnrollmentReplied,
    EnrollmentStopped,
    SequenceCreated,
    SequenceStepsChanged,
    StepDue,
    TaskDue,
    TestEmailSent,
)
from contracts.base import EventEnvelope, decode_event, stream_id
from contracts.values import Channel, steps_json
from contracts.views import Created, StepPreview
from sequences.bootstrap import Runtime
from sequences.eventlog.store import ANY_VERSION, Append, Causation
from sequences.faults import crash_point
from sequences.messaging.consumer import (
    Delivery,
    HandBack,
    Subscription,
    delivery_attempt,
    retry_delay,
)
from sequences.messaging.rpc import Rejected
from sequences.signing import Signer
from sequences.tracing import TRACEPARENT, TRACESTATE, context_from, current_trace_headers, tracer
from services.mailer.adapters import CaptureVerifier, Mailbox, Mailboxes
from services.mailer.domain import (
    SAMPLE_CONTACT,
    Links,
    MissingMergeValue,
    OutgoingEmail,
    PreviousEmail,
    build_message,
    html_body_for,
    message_id_for,
    render,
    text_body_for,
    thread_for,
)

log = logging.getLogger(__name__)
_tracer = tracer(__name__)
_MERGE_FIELDS = ("name", "company", "job_title", "owner_name")
_TASK_NAMESPACE = uuid.UUID("3d5a7a52-8f0e-4c2b-9f57-0d6c1f9a2b44")


@dataclass(frozen=True)
class _Send:
    """An email about to go out for a due step."""

    envelope: EventEnvelope
    event: StepDue
    mailbox: Mailbox
    message: object  # domain.Message
    email: OutgoingEmail


@dataclass
class _Results:
    """What a run of due steps came to, written in one go at its end."""

    appends: list[Append] = field(default_factory=list)
    sent: list[tuple[StepDue, OutgoingEmail]] = field(default_factory=list)
    refused: list[StepDue] = field(default_factory=list)  # nothing went out: no intent to keep
    handed_back: list[HandBack] = field(default_factory=list)

    def append(self, envelope: EventEnvelope, event, trace: dict | None = None) -> None:
        """`event` follows `envelope`, in its trace (or in the span whose `trace` is given)."""
        trace = trace or {TRACEPARENT: envelope.traceparent, TRACESTATE: envelope.tracestate}
        causation = replace(Causation.following(envelope), traceparent=trace.get(TRACEPARENT),
                            tracestate=trace.get(TRACESTATE))
        self.appends.append(Append(event.stream_id(), ANY_VERSION, [event], causation))


class DeliveryUnknown(Exception):
    """A send that a crash left unrecorded may have arrived, and the verifier cannot say so
    now: the step comes back with a growing delay rather than risk a second email."""


class MailerHandlers:
    def __init__(self, runtime: Runtime, mailboxes: Mailboxes, signer: Signer,
                 verifier: CaptureVerifier | None = None, retry_limit: int = 5):
        self.runtime = runtime
        self.mailboxes = mailboxes
        self.signer = signer
        self.verifier = verifier
        self.retry_limit = retry_limit

    # --- what rendering needs ---------------------------------------------------------------

    async def on_sequence_created(self, event: SequenceCreated, d: Delivery) -> None:
        await d.conn.execute(
            text(
                "INSERT INTO mailer.sequences (sequence_id, workspace_id, sender_name,"
                " sender_email, timezone, steps, language)"
                " VALUES (:id, :ws, :name, :email, :timezone, CAST(:steps AS jsonb), :language)"
                " ON CONFLICT (sequence_id) DO NOTHING"
            ),
            {"id": event.sequence_id, "ws": d.envelope.workspace_id, "name": event.sender_name, "email": event.sender_email,
             "timezone": event.timezone, "steps": steps_json(event.steps),
             "language": event.language},
        )

    async def on_steps_changed(self, event: SequenceStepsChanged, d: Delivery) -> None:
        await d.conn.execute(
            text("UPDATE mailer.sequences SET steps = CAST(:steps AS jsonb) WHERE sequence_id = :id"),
            {"id": event.sequence_id, "steps": steps_json(event.steps)},
        )

    async def on_contact_created(self, event: ContactCreated, d: Delivery) -> None:
        await d.conn.execute(
            text(
                "INSERT INTO mailer.contacts (contact_id, workspace_id, email, merge_values)"
                " VALUES (:id, :ws, :email, CAST(:values AS jsonb))"
                " ON CONFLICT (contact_id) DO NOTHING"
            ),
            {"id": event.contact_id, "ws": d.envelope.workspace_id, "email": event.email,
             "values": json.dumps(event.model_dump(include=set(_MERGE_FIELDS)))},
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

    # --- due steps --------------------------------------------------------------------------

    async def on_steps_due(self, run: list[EventEnvelope], conn) -> list[HandBack]:
        """Due steps, many at once: one query for what they need, one commit of their send
        intents, their messages sent concurrently over the SMTP pool, one append of what
        happened. A step whose sequence or contact is not known yet, or whose email the server
        refused for now, is handed back; the others are done."""
        results = _Results()
        seen: set[uuid.UUID] = set()
        steps = []
        for envelope in run:
            event = decode_event(envelope)
            if event.enrollment_id in seen:  # a second step of one enrollment waits for the first
                results.handed_back.append(HandBack(envelope.event_id))
                continue
            seen.add(event.enrollment_id)
            steps.append((envelope, event))
        situations = await self._situations(conn, [event for _, event in steps])
        sends = []
        for envelope, event in steps:
            found = situations.get((event.enrollment_id, event.step_id))
            if found is None:  # sequence or contact not seen yet
                results.handed_back.append(HandBack(envelope.event_id))
            elif send := await self._prepare(envelope, event, found, results):
                sends.append(send)
        if sends:
            await self._set_intents([(s.event, s.email.message_id, None) for s in sends],
                                    "sending")
            crash_point("mailer.before_smtp")
            await asyncio.gather(*(self._send(send, results) for send in sends))
        await self._record(conn, results)
        return results.handed_back

    async def _prepare(self, envelope, event: StepDue, found, results: _Results) -> _Send | None:
        """The email to send for a due step, or None when there is none: a task instead, the
        step sent already, held, deferred, or the enrollment or contact gone."""
        if event.channel != Channel.email:
            self._task_for(envelope, event, found, results)
            return None
        if found.sent or found.halted or found.opted_out:
            return None  # sent already, or the enrollment ended, or the contact opted out
        step = _step(found.steps, event.step_id)
        if step is None:
            return None  # the step was deleted after it fell due
        mailbox = self.mailboxes.for_address(found.sender_email)
        try:
            email = self._compose(envelope, event, found, step, _previous(found))
            message = build_message(email)
        except (MissingMergeValue, ValueError) as error:
            results.append(envelope, EmailHeld(
                enrollment_id=event.enrollment_id, sequence_id=event.sequence_id,
                step_id=event.step_id, step_index=event.step_index, reason=str(error)))
            return None
        if found.intent_state == "sending":  # a crash came between a send and its record
            try:
                arrived = await self._arrived(email)
            except DeliveryUnknown as unknown:
                log.warning("%s", unknown)
                results.handed_back.append(
                    HandBack(envelope.event_id, retry_delay(delivery_attempt(envelope))))
                return None
            if arrived:
                results.sent.append((event, email))  # it went through before the crash
                results.append(envelope, self._email_sent(event, email))
                return None
        if mailbox.limited and not await self._slot(envelope, event, email, mailbox, found,
                                                    results):
            return None
        return _Send(envelope, event, mailbox, message, email)

    async def _situations(self, conn, events: list[StepDue]) -> dict:
        """Everything the due steps need, in one query, by (enrollment, step)."""
        if not events:
            return {}
        rows = await conn.exec_driver_sql(_SITUATIONS, {
            "enrollments": [e.enrollment_id for e in events], "steps": [e.step_id for e in events],
            "sequences": [e.sequence_id for e in events],
            "contacts": [e.contact_id for e in events]})
        return {(row.enrollment_id, row.step_id): row for row in rows}

    async def _send(self, send: _Send, results: _Results) -> None:
        """Hand the message to the SMTP server. A 5xx for the recipient is a hard bounce, a 4xx
        is retried with backoff up to a bound, anything else (connection lost) is retried."""
        event, email, envelope = send.event, send.email, send.envelope
        with _tracer.start_as_current_span("smtp.send", context=context_from(
                {TRACEPARENT: envelope.traceparent, TRACESTATE: envelope.tracestate}),
                attributes={"enrollment_id": str(event.enrollment_id),
                            "sequence_id": str(event.sequence_id),
                            "step_index": event.step_index, "smtp.host": send.mailbox.smtp.host}):
            try:
                await self.mailboxes.sender(send.mailbox).send(send.message)
            except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPResponseException) as error:
                code, reason = _refusal(error)
            except Exception:  # the intent stays: the next attempt asks before sending again
                log.exception("sending %s failed; will retry", email.message_id)
                results.handed_back.append(
                    HandBack(envelope.event_id, retry_delay(delivery_attempt(envelope))))
                return
            else:
                crash_point("mailer.after_smtp")
                results.sent.append((event, email))
                results.append(envelope, self._email_sent(event, email), current_trace_headers())
                return
        self._refused(send, code, reason, results)

    def _refused(self, send: _Send, code: int | None, reason: str, results: _Results) -> None:
        event, envelope, attempt = send.event, send.envelope, delivery_attempt(send.envelope)
        if code is None:
            log.error("SMTP refused %s without a code: %s", send.email.message_id, reason)
            results.handed_back.append(HandBack(envelope.event_id, retry_delay(attempt)))
            return
        results.refused.append(event)  # nothing went out
        if code >= 500:
            results.append(envelope, BounceDetected(
                enrollment_id=event.enrollment_id, recipient=send.email.recipient, kind="hard",
                status=str(code), diagnostic=reason[:1000],
                original_message_id=send.email.message_id, detected_by="smtp",
                detected_at=self.runtime.clock.now()))
        elif attempt >= self.retry_limit:
            results.append(envelope, EmailFailed(
                enrollment_id=event.enrollment_id, sequence_id=event.sequence_id,
                step_id=event.step_id, step_index=event.step_index, reason=reason[:1000],
                smtp_code=code, attempts=attempt))
        else:  # "try later": the step comes back with a growing delay
            log.info("SMTP said later for %s: %s %s", send.email.message_id, code, reason)
            results.handed_back.append(HandBack(envelope.event_id, retry_delay(attempt)))

    async def _arrived(self, email: OutgoingEmail) -> bool:
        """Whether a send that a crash left unrecorded went through. Without a verifier nobody
        can tell, and it is sent again (at least once). With one that does not answer (busy,
        restarting), sending again would double every email that did arrive: ask again later."""
        if self.verifier is None:
            return False
        delivered = await self.verifier.was_delivered(email.message_id)
        if delivered is None:
            raise DeliveryUnknown(f"cannot tell whether {email.message_id} arrived; asking later")
        return delivered

    async def _slot(self, envelope, event, email, mailbox: Mailbox, found,
                    results: _Results) -> bool:
        """Per-mailbox daily cap and minimum gap: take a sending slot, or defer the step to the
        next allowed moment (the scheduler fires it again then). Never dropped."""
        now = self.runtime.clock.now()
        if found.intent_state == "reserved" and found.intent_slot <= now + _SLACK:
            return True  # this step's slot has come
        zone = ZoneInfo(found.timezone)
        today = now.astimezone(zone).date()
        taken = (await self._at_once(_TAKE_SLOT, {
            "address": mailbox.address, "day": today, "now": now,
            "gap": timedelta(seconds=mailbox.min_gap_seconds),
            "cap": mailbox.daily_cap or 2**31 - 1,
        })).first()
        if taken is None:
            until = datetime.combine(today + timedelta(days=1), time(0), zone)
            reason = f"daily cap of {mailbox.daily_cap} reached for {mailbox.address}"
        elif taken.last_slot > now + _SLACK:
            until = taken.last_slot
            await self._set_intents([(event, email.message_id, until)], "reserved")
            reason = f"{mailbox.min_gap_seconds:g} s between sends from {mailbox.address}"
        else:
            return True
        results.append(envelope, EmailDeferred(enrollment_id=event.enrollment_id,
                                               step_id=event.step_id, until=until, reason=reason))
        return False

    def _task_for(self, envelope, event: StepDue, found, results: _Results) -> None:
        """SMS and call steps are never sent: they become a task for the contact's owner."""
        step = _step(found.steps, event.step_id)
        if step is None or found.halted:
            return
        values = found.merge_values
        task = TaskDue(
            task_id=uuid.uuid5(_TASK_NAMESPACE, f"{event.enrollment_id}:{event.step_id}"),
            enrollment_id=event.enrollment_id, sequence_id=event.sequence_id,
            contact_id=event.contact_id, step_id=event.step_id, step_index=event.step_index,
            channel=event.channel, owner_name=values.get("owner_name") or "",
            instructions=render(step["body"], values, missing=[]), due_at=event.due_at,
        )
        results.append(envelope, task)

    # --- pieces -----------------------------------------------------------------------------

    def _links(self, workspace_id, enrollment_id, step_id, contact_id, language: str) -> Links:
        """Signed links: the gateway takes their workspace and ids as they say (no API key),
        and shows the unsubscribe page in the sequence's language ("l")."""
        base = self.runtime.settings.public_url.rstrip("/")
        w = str(workspace_id)
        pixel = self.signer.sign("open", {"w": w, "e": str(enrollment_id), "s": str(step_id)})
        unsubscribe = self.signer.sign("unsubscribe",
                                       {"w": w, "c": str(contact_id), "l": language})
        return Links(f"{base}/t/{pixel}.gif", f"{base}/unsubscribe/{unsubscribe}")

    def _compose(self, envelope: EventEnvelope, event: StepDue, found, step,
                 previous: PreviousEmail | None) -> OutgoingEmail:
        """`found`: the sender, timezone, language and the contact's address and merge values."""
        values = found.merge_values
        links = self._links(envelope.workspace_id, event.enrollment_id, event.step_id,
                            event.contact_id, found.language)
        subject = render(step["subject"], values) if step.get("subject") else None
        return OutgoingEmail(
            sender_name=found.sender_name,
            sender_email=found.sender_email,
            recipient=found.email,
            thread=thread_for(subject, previous),
            text_body=text_body_for(step["body"], values, links, language=found.language),
            html_body=html_body_for(step["body"], values, links, language=found.language),
            message_id=message_id_for(event.enrollment_id, event.step_id, found.sender_email),
            date=self.runtime.clock.now().astimezone(ZoneInfo(found.timezone)),
            unsubscribe_url=links.unsubscribe_url,
        )

    async def _set_intents(self, intents: list[tuple[StepDue, str, datetime | None]],
                           state: str) -> None:
        """(step, message id, slot) of each email: committed at once, on a connection of its
        own, outside the handler's transaction: they must outlive a crash of the sends."""
        async with self.runtime.engine.connect() as own:
            own = await own.execution_options(isolation_level="AUTOCOMMIT")
            await own.exec_driver_sql(_SET_INTENTS, {
                "enrollments": [e.enrollment_id for e, _, _ in intents],
                "steps": [e.step_id for e, _, _ in intents],
                "message_ids": [m for _, m, _ in intents], "slots": [s for _, _, s in intents],
                "state": state})

    async def _at_once(self, statement, params: dict):
        """Committed at once, on a connection of its own, outside the handler's transaction:
        mailbox slots must outlive a crash of the send (and its rollback)."""
        async with self.runtime.engine.connect() as own:
            own = await own.execution_options(isolation_level="AUTOCOMMIT")
            return await own.execute(statement, params)

    def _email_sent(self, event: StepDue, email: OutgoingEmail) -> EmailSent:
        return EmailSent(
            enrollment_id=event.enrollment_id, sequence_id=event.sequence_id,
            contact_id=event.contact_id, step_id=event.step_id, step_index=event.step_index,
            message_id=email.message_id, recipient=email.recipient, subject=email.thread.subject,
            sent_at=email.date, in_reply_to=email.thread.in_reply_to,
            references=list(email.thread.references))

    async def _record(self, conn, results: _Results) -> None:
        """The sends, in the consumer's transaction: their deliveries, their intents removed
        (and those of refused emails), and every event of the run in one append."""
        sent, refused = results.sent, results.refused
        if sent or refused:
            done = [event for event, _ in sent] + refused
            await conn.exec_driver_sql(_RECORD_SENT, {
                "done_enrollments": [e.enrollment_id for e in done],
                "done_steps": [e.step_id for e in done],
                "enrollments": [e.enrollment_id for e, _ in sent],
                "steps": [e.step_id for e, _ in sent],
                "step_indexes": [e.step_index for e, _ in sent],
                "message_ids": [m.message_id for _, m in sent],
                "subjects": [m.thread.thread_subject for _, m in sent],
                "references": [json.dumps(list(m.thread.references)) for _, m in sent],
                "recipients": [m.recipient for _, m in sent],
                "sent_ats": [m.date for _, m in sent]})
        if results.appends:
            await self.runtime.store.append(conn, results.appends,
                                            results.appends[0].causation)

    # --- requests ---------------------------------------------------------------------------

    async def preview_step(self, query: PreviewStep) -> StepPreview:
        step, values, _ = await self._step_for_request(query)
        missing: list[str] = []
        subject = render(step["subject"], values, missing=missing) if step.get("subject") else None
        return StepPreview(
            subject=subject,
            text=render(step["body"], values, missing=missing),
            html=html_body_for(step["body"], values, None, missing=[]),
            missing=sorted(set(missing)),
        )

    async def send_test_email(self, command: SendTestEmail) -> Created:
        """The step rendered as it would go out, to the requester, marked as a test. Recorded in
        its own stream: no enrollment, send or open count changes."""
        step, values, sequence = await self._step_for_request(command)
        if step["channel"] != Channel.email:
            raise Rejected(422, "only email steps can be sent as a test", "step_id")
        try:
            subject = render(step.get("subject") or "(no subject: continues the thread)", values)
            email = OutgoingEmail(
                sender_name=sequence.sender_name, sender_email=sequence.sender_email,
                recipient=str(command.to), thread=thread_for(f"[TEST] {subject}", None),
                text_body=text_body_for(step["body"], values, None),
                html_body=html_body_for(step["body"], values, None),
                message_id=f"<test.{uuid.uuid4()}@{sequence.sender_email.rsplit('@', 1)[1]}>",
                date=self.runtime.clock.now().astimezone(ZoneInfo(sequence.timezone)),
            )
        except MissingMergeValue as missing:
            raise Rejected(422, str(missing), "contact_id") from None
        mailbox = self.mailboxes.for_address(sequence.sender_email)
        await self.mailboxes.sender(mailbox).send(build_message(email))
        sent = TestEmailSent(sequence_id=command.sequence_id, step_id=command.step_id,
                             recipient=str(command.to), message_id=email.message_id,
                             sent_at=self.runtime.clock.now())
        async with self.runtime.engine.begin() as conn:
            await self.runtime.store.append(
                conn, [Append(sent.stream_id(), ANY_VERSION, [sent])],
                Causation.new(command.workspace_id))
        return Created(id=command.step_id)

    async def _step_for_request(self, request: PreviewStep | SendTestEmail):
        """The step, the merge values (of the chosen contact or a sample one) and the sequence,
        of the request's workspace. The mailer learns of a sequence or contact from its events a
        moment after it is saved: one that is in the log but not here yet is waited for (a
        preview right after saving answers, not 404), up to a few seconds."""
        clock = asyncio.get_running_loop()
        deadline = clock.time() + _CATCH_UP_SECONDS
        while True:
            try:
                return await self._find_step(request)
            except Rejected as rejected:
                missing = rejected.problem.errors[0].field if rejected.problem.errors else None
                if (missing not in ("sequence_id", "contact_id") or clock.time() > deadline
                        or not await self._in_log(request, missing)):
                    raise
                await asyncio.sleep(0.1)

    async def _in_log(self, request: PreviewStep | SendTestEmail, field: str) -> bool:
        stream = stream_id(field.removesuffix("_id"), getattr(request, field))
        async with self.runtime.engine.connect() as conn:
            return (await conn.execute(text(
                "SELECT 1 FROM eventlog.events WHERE stream_id = :s AND version = 1"
                " AND workspace_id = :ws"), {"s": stream, "ws": request.workspace_id})
            ).first() is not None

    async def _find_step(self, request: PreviewStep | SendTestEmail):
        sequence_id, step_id, contact_id = request.sequence_id, request.step_id, request.contact_id
        async with self.runtime.engine.connect() as conn:
            sequence = (await conn.execute(
                text("SELECT sender_name, sender_email, timezone, steps FROM mailer.sequences"
                     " WHERE sequence_id = :id AND workspace_id = :ws"),
                {"id": sequence_id, "ws": request.workspace_id})).first()
            if sequence is None:
                raise Rejected(404, f"no such sequence: {sequence_id}", "sequence_id")
            step = next((s for s in sequence.steps if s["step_id"] == str(step_id)), None)
            if step is None:
                raise Rejected(404, f"no such step in this sequence: {step_id}", "step_id")
            if contact_id is None:
                return step, SAMPLE_CONTACT, sequence
            contact = (await conn.execute(
                text("SELECT merge_values FROM mailer.contacts"
                     " WHERE contact_id = :id AND workspace_id = :ws"),
                {"id": contact_id, "ws": request.workspace_id})).first()
        if contact is None:
            raise Rejected(404, f"no such contact: {contact_id}", "contact_id")
        return step, contact.merge_values, sequence

    async def record_open(self, command: RecordEmailOpen) -> Created:
        async with self.runtime.engine.begin() as conn:
            delivered = (await conn.execute(
                text("SELECT message_id FROM mailer.deliveries"
                     " WHERE enrollment_id = :e AND step_id = :s"),
                {"e": command.enrollment_id, "s": command.step_id})).first()
            if delivered is None:
                raise Rejected(404, "no such email", "token")
            opened = EmailOpened(enrollment_id=command.enrollment_id, step_id=command.step_id,
                                 message_id=delivered.message_id,
                                 opened_at=self.runtime.clock.now())
            await self.runtime.store.append(
                conn, [Append(opened.stream_id(), ANY_VERSION, [opened])],
                Causation.new(command.workspace_id))
        return Created(id=command.enrollment_id)


_SLACK = timedelta(seconds=2)
_CATCH_UP_SECONDS = 5.0  # how long a preview waits for a just-saved sequence or contact
# binary array parameters (exec_driver_sql, as the event store): psycopg quotes nothing
_SITUATIONS = """
    SELECT v.enrollment_id, v.step_id, s.sender_name, s.sender_email, s.timezone, s.steps,
           s.language, c.email, c.merge_values, c.opted_out,
           EXISTS (SELECT 1 FROM mailer.deliveries d
                   WHERE d.enrollment_id = v.enrollment_id AND d.step_id = v.step_id) AS sent,
           EXISTS (SELECT 1 FROM mailer.halted_enrollments h
                   WHERE h.enrollment_id = v.enrollment_id) AS halted,
           i.state AS intent_state, i.slot AS intent_slot,
           p.message_id AS previous_message_id, p.thread_subject AS previous_subject,
           p."references" AS previous_references
    FROM unnest(%(enrollments)b::uuid[], %(steps)b::uuid[], %(sequences)b::uuid[],
                %(contacts)b::uuid[]) AS v(enrollment_id, step_id, sequence_id, contact_id)
    JOIN mailer.sequences s ON s.sequence_id = v.sequence_id
    JOIN mailer.contacts c ON c.contact_id = v.contact_id
    LEFT JOIN mailer.send_intents i
        ON i.enrollment_id = v.enrollment_id AND i.step_id = v.step_id
    LEFT JOIN LATERAL (
        SELECT message_id, thread_subject, "references" FROM mailer.deliveries d
        WHERE d.enrollment_id = v.enrollment_id ORDER BY sent_at DESC, step_index DESC LIMIT 1
    ) p ON true
"""
_SET_INTENTS = """
    INSERT INTO mailer.send_intents (enrollment_id, step_id, message_id, state, slot)
    SELECT enrollment_id, step_id, message_id, %(state)s, slot FROM unnest(%(enrollments)b::uuid[], %(steps)b::uuid[],
                                     %(message_ids)b::text[], %(slots)s::timestamptz[])
        AS v(enrollment_id, step_id, message_id, slot)
    ON CONFLICT (enrollment_id, step_id) DO UPDATE
        SET state = EXCLUDED.state, slot = coalesce(EXCLUDED.slot, mailer.send_intents.slot),
            updated_at = now()
"""
_RECORD_SENT = """
    WITH cleared AS (
        DELETE FROM mailer.send_intents i
        USING unnest(%(done_enrollments)b::uuid[], %(done_steps)b::uuid[]) AS v(e, s)
        WHERE i.enrollment_id = v.e AND i.step_id = v.s
    )
    INSERT INTO mailer.deliveries (enrollment_id, step_id, step_index, message_id,
                                   thread_subject, "references", recipient, sent_at)
    SELECT e, s, i, m, t, ARRAY(SELECT jsonb_array_elements_text(r::jsonb)), rc, at
    FROM unnest(%(enrollments)b::uuid[], %(steps)b::uuid[], %(step_indexes)b::integer[],
                %(message_ids)b::text[], %(subjects)b::text[], %(references)b::text[],
                %(recipients)b::text[], %(sent_ats)b::timestamptz[])
        AS v(e, s, i, m, t, r, rc, at)
"""
_TAKE_SLOT = text(
    """
    INSERT INTO mailer.mailbox_usage (address, day, sent, last_slot)
    VALUES (:address, :day, 1, :now)
    ON CONFLICT (address, day) DO UPDATE
        SET sent = mailer.mailbox_usage.sent + 1,
            last_slot = greatest(:now, mailer.mailbox_usage.last_slot + :gap)
        WHERE mailer.mailbox_usage.sent < :cap
    RETURNING sent, last_slot
    """
)


def _step(steps: list[dict], step_id: uuid.UUID) -> dict | None:
    return next((s for s in steps if s["step_id"] == str(step_id)), None)


def _previous(found) -> PreviousEmail | None:
    """The last email of this enrollment: a step without subject continues its thread."""
    if found.previous_message_id is None:
        return None
    return PreviousEmail(found.previous_message_id, found.previous_subject,
                         tuple(found.previous_references))


def _refusal(error: Exception) -> tuple[int | None, str]:
    """The SMTP code and text of a refusal (for several recipients, the first one's)."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused) and error.recipients:
        error = error.recipients[0]
    return getattr(error, "code", None), getattr(error, "message", str(error))



def subscription(handlers: MailerHandlers) -> Subscription:
    mailer = Subscription("mailer", ["sequence", "contact", "enrollment", "schedule"])
    mailer.on(SequenceCreated)(handlers.on_sequence_created)
    mailer.on(SequenceStepsChanged)(handlers.on_steps_changed)
    mailer.on(ContactCreated)(handlers.on_contact_created)
    mailer.on(ContactUpdated)(handlers.on_contact_updated)
    mailer.on(ContactOptedOut)(handlers.on_contact_opted_out)
    mailer.on_batch(StepDue)(handlers.on_steps_due)
    for halt in (EnrollmentReplied, EnrollmentBounced, EnrollmentStopped):
        mailer.on(halt)(handlers.on_enrollment_halted)
    return mailer
