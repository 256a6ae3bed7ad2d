"""The mailer's due steps: each due email step becomes one sent email (and each due SMS or
call step a task for its owner), a fetched batch at a time. `StepSender.on_steps_due` reads
what the batch needs, prepares each step's email (or decides it waits, is held, deferred or
becomes a task), sends them concurrently over the mailboxes' SMTP pools, and records the run.

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
from time import perf_counter
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import aiosmtplib
from sqlalchemy import text

from contracts.events import (
    BounceDetected,
    EmailDeferred,
    EmailFailed,
    EmailHeld,
    VariantAssigned,
    EmailSent,
    StepDue,
    TaskDue,
)
from contracts.base import EventEnvelope, decode_event
from contracts.texts import TextError, said
from contracts.values import Channel
from sequences import logs, metrics
from sequences.bootstrap import Runtime
from sequences.bounce_reasons import classify, status_code
from sequences.eventlog.store import ANY_VERSION, Append, Causation
from sequences.faults import crash_point
from sequences.i18n import N_
from sequences.messaging.consumer import (
    HandBack,
    delivery_attempt,
    retry_delay,
)
from sequences.signing import Signer
from sequences.tracing import TRACEPARENT, TRACESTATE, context_from, current_trace_headers, tracer
from sequences import variants as variants_rules
from sequences import mailboxes as connected_mailboxes
from sequences.encryption import SecretBox
from services.mailer.adapters import (
    CaptureVerifier,
    Mailbox,
    Mailboxes,
    describe_failure,
    is_mailbox_failure,
)
from sequences.oauth import AccessTokens
from services.mailer.pools import Pools, gap_with_jitter, mailbox_of
from sequences.link_tracking import Link
from services.mailer.domain import (
    Links,
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
    # (enrollment, address, day): the pool mailbox a new enrollment got
    assigned: list[tuple[uuid.UUID, str, object]] = field(default_factory=list)
    unhealthy: list[tuple[uuid.UUID, str]] = field(default_factory=list)  # (mailbox, problem)
    letters: list[tuple[uuid.UUID, str]] = field(default_factory=list)  # new A/B letters
    stream_appends: dict[str, int] = field(default_factory=dict)  # stream -> its place in appends
    handed_back: list[HandBack] = field(default_factory=list)
    senders: dict[uuid.UUID, str] = field(default_factory=dict)  # enrollment -> mailbox used

    def append(self, envelope: EventEnvelope, event, trace: dict | None = None) -> None:
        """`event` follows `envelope`, in its trace (or in the span whose `trace` is given)."""
        trace = trace or {TRACEPARENT: envelope.traceparent, TRACESTATE: envelope.tracestate}
        causation = replace(Causation.following(envelope), traceparent=trace.get(TRACEPARENT),
                            tracestate=trace.get(TRACESTATE))
        stream = event.stream_id()
        if (at := self.stream_appends.get(stream)) is not None:
            # a second event of one stream (VariantAssigned, then EmailSent): in one append,
            # or both would take the same next version
            self.appends[at] = replace(self.appends[at], events=[*self.appends[at].events, event])
            return
        self.stream_appends[stream] = len(self.appends)
        self.appends.append(Append(stream, ANY_VERSION, [event], causation))


class DeliveryUnknown(Exception):
    """A send that a crash left unrecorded may have arrived, and the verifier cannot say so
    now: the step comes back with a growing delay rather than risk a second email."""


class StepSender:
    def __init__(self, runtime: Runtime, mailboxes: Mailboxes, signer: Signer,
                 verifier: CaptureVerifier | None = None, retry_limit: int = 5,
                 box: SecretBox | None = None, tokens: AccessTokens | None = None):
        self.runtime = runtime
        self.mailboxes = mailboxes
        self.box = box
        self.tokens = tokens
        self.signer = signer
        self.verifier = verifier
        self.retry_limit = retry_limit

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
        pools = await Pools.of(conn, self.box, list(situations.values()), self.runtime.clock.now())
        paused = dict((await conn.execute(_PAUSED_MAILBOXES)).all())
        sends = []
        for envelope, event in steps:
            found = situations.get((event.enrollment_id, event.step_id))
            if found is None:  # sequence or contact not seen yet
                results.handed_back.append(HandBack(envelope.event_id))
            elif send := await self._prepare(envelope, event, found, pools, paused, results):
                sends.append(send)
        if sends:
            await self._set_intents([(s.event, s.email.message_id, None) for s in sends],
                                    "sending")
            crash_point("mailer.before_smtp")
            await asyncio.gather(*(self._send(send, results) for send in sends))
        await self._record(conn, results)
        return results.handed_back

    async def _prepare(self, envelope, event: StepDue, found, pools: Pools,
                       paused: dict[str, str], results: _Results) -> _Send | None:
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
        step = self._variant_of(envelope, event, found, step, results)
        if found.intent_state != "sending" and self._suppressed(envelope, event, found, results):
            return None
        mailbox = self._mailbox_for(envelope, event, found, pools, results)
        if mailbox is None:
            return None
        if found.intent_state != "sending" and self._paused(envelope, event, mailbox.address,
                                                            paused, results):
            return None
        try:
            email = self._compose(envelope, event, found, step, _previous(found), mailbox)
            message = build_message(email)
        except ValueError as error:  # (MissingMergeValue is one)
            results.append(envelope, EmailHeld(
                enrollment_id=event.enrollment_id, sequence_id=event.sequence_id,
                step_id=event.step_id, step_index=event.step_index, reason=str(error),
                reason_text=error.text if isinstance(error, TextError) else None))
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
                metrics.emails.add(1, {"outcome": "sent", "mailbox": mailbox.address,
                                       "reason": ""})
                results.append(envelope, self._email_sent(event, email))
                return None
        if mailbox.limited and not await self._slot(envelope, event, email, mailbox, found,
                                                    results):
            return None
        return _Send(envelope, event, mailbox, message, email)

    def _variant_of(self, envelope, event: StepDue, found, step: dict,
                    results: _Results) -> dict:
        """The step as this enrollment gets it: with variants, the subject and body of its
        letter (assigned now, with VariantAssigned, if it has none yet), or of the winner once
        one is chosen; "variant" names the letter that went."""
        variants = step.get("variants") or []
        if not variants:
            return step
        letter = found.variant_letter
        if letter is None:
            letter = variants_rules.assign(str(event.sequence_id), event.enrollment_id,
                                           [v["weight"] for v in variants])
            results.letters.append((event.enrollment_id, letter))
            results.append(envelope, VariantAssigned(
                enrollment_id=event.enrollment_id, sequence_id=event.sequence_id,
                letter=letter, assigned_at=self.runtime.clock.now()))
        used = found.variant_winner or letter
        index = variants_rules.LETTERS.index(used)
        if index >= len(variants):  # a letter this step has no variant for: the step itself
            return step
        chosen = variants[index]
        return {**step, "subject": chosen.get("subject") or step.get("subject"),
                "body": chosen["body"], "variant": used}

    def _suppressed(self, envelope, event: StepDue, found, results: _Results) -> bool:
        """Never sent to a suppressed address or domain: held (the enrollment needs someone)."""
        if not found.suppressed:
            return False
        results.append(envelope, EmailHeld(
            enrollment_id=event.enrollment_id, sequence_id=event.sequence_id,
            step_id=event.step_id, step_index=event.step_index,
            reason=f"{found.email} (or its domain) is on the suppression list"))
        return True

    def _paused(self, envelope, event: StepDue, address: str, paused: dict[str, str],
                results: _Results) -> bool:
        """Never sent from a mailbox paused for sender-side rejections: deferred (tried again a
        while later, so it goes soon after someone resumes the mailbox)."""
        if address.lower() not in paused:
            return False
        results.append(envelope, EmailDeferred(
            enrollment_id=event.enrollment_id, step_id=event.step_id,
            until=self.runtime.clock.now() + _PAUSED_RECHECK,
            reason=f"the sender mailbox {address} is paused until someone resumes it:"
                   f" {paused[address.lower()]}"[:1000]))
        return True

    def _mailbox_for(self, envelope, event: StepDue, found, pools: Pools,
                     results: _Results) -> Mailbox | None:
        """The mailbox this email goes from: the one the enrollment got from the sequence's
        pool (a new enrollment gets the one with the most room today), else the sequence's
        sender, as a connected mailbox of the workspace or from MAILBOXES. None when it must
        wait: no pool mailbox is connected, or its mailbox cannot send now (nothing goes from
        another mailbox instead: the thread stays with its mailbox)."""
        address = found.sender_email
        if found.mailbox_pool:
            address = found.kept_mailbox or pools.choose(found)
            if address is None:
                why = said(N_("none of the sequence's mailboxes is connected: %(mailboxes)s"),
                           mailboxes=", ".join(found.mailbox_pool))
                results.append(envelope, EmailHeld(
                    enrollment_id=event.enrollment_id, sequence_id=event.sequence_id,
                    step_id=event.step_id, step_index=event.step_index,
                    reason=why.english(), reason_text=why))
                return None
            if found.kept_mailbox is None:
                results.assigned.append((event.enrollment_id, address, pools.today(found)))
        connected = pools.connected(found.workspace_id, address)
        if connected is None:
            return self.mailboxes.for_address(address)
        if not connected.healthy:
            results.append(envelope, _cannot_send(event, address, connected.problem,
                                                  self.runtime.clock.now()))
            return None
        return mailbox_of(connected, pools.cap(connected, found))

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
        """Hand the message to the SMTP server. A 5xx for the recipient is a bounce (hard only
        when the address is at fault: `sequences.bounce_reasons`), a 4xx is retried with
        backoff up to a bound, anything else (connection lost) is retried."""
        event, email, envelope = send.event, send.email, send.envelope
        results.senders[event.enrollment_id] = send.mailbox.address
        started = perf_counter()
        # a batch of StepDue mixes workspaces and traces: this send's log lines name its own
        with logs.about(envelope.workspace_id, envelope.traceparent), \
                _tracer.start_as_current_span("smtp.send", context=context_from(
                {TRACEPARENT: envelope.traceparent, TRACESTATE: envelope.tracestate}),
                attributes={"enrollment_id": str(event.enrollment_id),
                            "sequence_id": str(event.sequence_id),
                            "step_index": event.step_index, "smtp.host": send.mailbox.smtp.host}):
            try:
                await self._deliver(send)
            except Exception as error:
                failure = error
                metrics.smtp_duration.record(perf_counter() - started, {
                    "smtp.operation": "send", "error.type": type(error).__name__})
            else:
                metrics.smtp_duration.record(perf_counter() - started,
                                             {"smtp.operation": "send"})
                log.debug("sent %s (enrollment %s, step %d)", email.message_id,
                          event.enrollment_id, event.step_index)
                metrics.emails.add(1, {"outcome": "sent", "mailbox": send.mailbox.address,
                                       "reason": ""})
                metrics.step_due_to_sent.record(max(0.0, (
                    self.runtime.clock.now() - envelope.occurred_at).total_seconds()))
                crash_point("mailer.after_smtp")
                results.sent.append((event, email))
                results.append(envelope, self._email_sent(event, email), current_trace_headers())
                return
        if is_mailbox_failure(failure):  # the mailbox, not the recipient: hold it, mark it
            self._mailbox_failed(send, describe_failure(failure), results)
        elif isinstance(failure, (aiosmtplib.SMTPRecipientsRefused,
                                  aiosmtplib.SMTPResponseException)):
            self._refused(send, *_refusal(failure), results)
        else:  # connection lost: the intent stays, the next attempt asks before sending again
            log.error("sending %s failed; will retry: %s", email.message_id, failure)
            results.handed_back.append(
                HandBack(envelope.event_id, retry_delay(delivery_attempt(envelope))))

    async def _deliver(self, send: _Send) -> None:
        """Over the mailbox's SMTP server. An OAuth2 mailbox logs in with its access token
        (refreshed first when it is near its expiry); a login the server refuses is tried once
        more with a new token (it expired early; a revoked consent makes the refresh fail
        instead, which is a mailbox failure)."""
        mailbox, connected = send.mailbox, send.mailbox.connected
        if connected is None or connected.auth != "oauth2" or self.tokens is None:
            await self.mailboxes.sender(mailbox).send(send.message)
            return
        token = await self.tokens.token(connected)
        try:
            await self.mailboxes.sender(_with_token(mailbox, token)).send(send.message)
        except aiosmtplib.SMTPAuthenticationError:
            token = await self.tokens.token(connected, refused=token)
            await self.mailboxes.sender(_with_token(mailbox, token)).send(send.message)

    def _mailbox_failed(self, send: _Send, problem: str, results: _Results) -> None:
        """The mailbox's server refused the login (a wrong or revoked credential, no such AUTH
        mechanism): nothing went out. The email waits, visibly, and so do the mailbox's next
        ones until the mailbox is fixed; a connected mailbox is marked unhealthy."""
        mailbox = send.mailbox
        if mailbox.connected is not None:
            problem = mailbox.connected.redact(problem)
            results.unhealthy.append((mailbox.connected.mailbox_id, f"SMTP: {problem}"))
        log.warning("mailbox %s cannot send: %s", mailbox.address, problem)
        results.refused.append(send.event)
        results.append(send.envelope, _cannot_send(send.event, mailbox.address, problem,
                                                   self.runtime.clock.now()))

    def _refused(self, send: _Send, code: int | None, reason: str, results: _Results) -> None:
        event, envelope, attempt = send.event, send.envelope, delivery_attempt(send.envelope)
        if code is None:
            log.error("SMTP refused %s without a code: %s", send.email.message_id, reason)
            results.handed_back.append(HandBack(envelope.event_id, retry_delay(attempt)))
            return
        results.refused.append(event)  # nothing went out
        if code >= 500:
            # why it was refused decides who is blamed: only a bad address is a hard bounce;
            # the enrollment service holds a sender-side or content-side refusal itself
            verdict = classify(str(code), reason)
            results.append(envelope, BounceDetected(
                enrollment_id=event.enrollment_id, recipient=send.email.recipient,
                kind=verdict.kind, status=status_code(reason) or str(code),
                diagnostic=f"{code} {reason}"[:1000], original_message_id=send.email.message_id,
                detected_by="smtp", detected_at=self.runtime.clock.now(),
                bounce_class=verdict.bounce_class, reason=verdict.reason, rule=verdict.rule))
            if verdict.bounce_class == "recipient-temporary":  # counted soft; this step did not go
                results.append(envelope, _failed(
                    event, f"{verdict.bounce_class} ({verdict.reason}): {reason}", code, attempt))
        elif attempt >= self.retry_limit:
            results.append(envelope, _failed(event, reason, code, attempt))
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
        hour = now.replace(minute=0, second=0, microsecond=0)
        slot = {"address": mailbox.address, "day": today, "now": now, "hour": hour,
                "gap": timedelta(seconds=gap_with_jitter(mailbox)),
                "cap": mailbox.daily_cap or 2**31 - 1,
                "hourly_cap": mailbox.hourly_cap or 2**31 - 1}
        taken = (await self._at_once(_TAKE_SLOT, slot)).first()
        if taken is None and (await self._at_once(_SLOT_REFUSED, slot)).scalar():
            until = datetime.combine(today + timedelta(days=1), time(0), zone)
            reason = said(N_("daily cap of %(cap)s reached for %(address)s"),
                          cap=mailbox.daily_cap, address=mailbox.address)
        elif taken is None:
            until = hour + timedelta(hours=1)
            reason = said(N_("hourly cap of %(cap)s reached for %(address)s"),
                          cap=mailbox.hourly_cap, address=mailbox.address)
        elif taken.last_slot > now + _SLACK:
            until = taken.last_slot
            await self._set_intents([(event, email.message_id, until)], "reserved")
            reason = said(N_("%(seconds)s s between sends from %(address)s"),
                          seconds=f"{mailbox.min_gap_seconds:g}", address=mailbox.address)
        else:
            return True
        results.append(envelope, EmailDeferred(
            enrollment_id=event.enrollment_id, step_id=event.step_id, until=until,
            reason=reason.english(), reason_text=reason))
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

    def _links(self, workspace_id, enrollment_id, step_id, contact_id, language: str,
               track_opens: bool = True, track_clicks: bool = True) -> Links:
        """Signed links: the gateway takes their workspace and ids as they say (no API key),
        and shows the unsubscribe page in the sequence's language ("l"). The pixel and the
        click redirects point at the tracking URL (a custom tracking domain) when one is set.
        A click token signs the link's URL with the email's ids: the redirect goes only where
        this email's body pointed (no open redirect)."""
        settings = self.runtime.settings
        base = settings.public_url.rstrip("/")
        tracking = (settings.tracking_url or settings.public_url).rstrip("/")
        ids = {"w": str(workspace_id), "e": str(enrollment_id), "s": str(step_id)}
        unsubscribe = self.signer.sign("unsubscribe",
                                       {"w": ids["w"], "c": str(contact_id), "l": language})
        pixel = f"{tracking}/t/{self.signer.sign('open', ids)}.gif" if track_opens else None

        def redirect(link: Link) -> str:
            return f"{tracking}/c/{self.signer.sign('click', {**ids, 'i': link.index, 'u': link.url})}"

        return Links(pixel, f"{base}/unsubscribe/{unsubscribe}",
                     redirect if track_clicks else None)

    def _compose(self, envelope: EventEnvelope, event: StepDue, found, step,
                 previous: PreviousEmail | None, mailbox: Mailbox) -> OutgoingEmail:
        """`found`: the sender, timezone, language and the contact's address and merge values;
        the email goes from `mailbox`, under its display name when it has one."""
        values = found.merge_values
        links = self._links(envelope.workspace_id, event.enrollment_id, event.step_id,
                            event.contact_id, found.language, found.track_opens,
                            found.track_clicks)
        subject = render(step["subject"], values) if step.get("subject") else None
        return OutgoingEmail(
            sender_name=mailbox.display_name or found.sender_name,
            # the sequence's sender as written, unless a mailbox of the workspace sends it
            sender_email=(mailbox.address if mailbox.connected or found.mailbox_pool
                          else found.sender_email),
            recipient=found.email,
            thread=thread_for(subject, previous),
            text_body=text_body_for(step["body"], values, links, language=found.language),
            html_body=html_body_for(step["body"], values, links, language=found.language),
            message_id=message_id_for(event.enrollment_id, event.step_id, mailbox.address),
            date=self.runtime.clock.now().astimezone(ZoneInfo(found.timezone)),
            unsubscribe_url=links.unsubscribe_url,
            variant=step.get("variant"),
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
            references=list(email.thread.references), variant=email.variant)

    async def _record(self, conn, results: _Results) -> None:
        """The sends, in the consumer's transaction: their deliveries, their intents removed
        (and those of refused emails), and every event of the run in one append."""
        sent, refused = results.sent, results.refused
        for mailbox_id, problem in results.unhealthy:
            await connected_mailboxes.mark(conn, mailbox_id, False, problem,
                                           self.runtime.clock.now())
        if results.letters:
            await conn.execute(text(
                "INSERT INTO mailer.enrollment_variants (enrollment_id, letter)"
                " SELECT * FROM unnest(CAST(:e AS uuid[]), CAST(:l AS text[]))"
                " ON CONFLICT DO NOTHING"),
                {"e": [e for e, _ in results.letters], "l": [l for _, l in results.letters]})
        if results.assigned:
            await conn.exec_driver_sql(_ASSIGN, {
                "enrollments": [e for e, _, _ in results.assigned],
                "addresses": [a for _, a, _ in results.assigned],
                "days": [d for _, _, d in results.assigned]})
        if sent:
            await conn.exec_driver_sql(_NOT_AWAITING, {"enrollments": [e.enrollment_id
                                                                        for e, _ in sent]})
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
        _count_emails(results)


_SLACK = timedelta(seconds=2)
def _with_token(mailbox: Mailbox, token: str) -> Mailbox:
    return replace(mailbox, smtp=replace(mailbox.smtp, oauth_token=token))


_PAUSED_RECHECK = timedelta(minutes=15)  # a step from a paused mailbox is tried again after
# sender mailboxes paused for sender-side rejections (a handful at most): address -> why
_PAUSED_MAILBOXES = text("SELECT address, reason FROM mailer.mailbox_states WHERE paused")
# binary array parameters (exec_driver_sql, as the event store): psycopg quotes nothing
_SITUATIONS = """
    SELECT v.enrollment_id, v.step_id, s.sender_name, s.sender_email, s.timezone, s.steps,
           s.language, s.workspace_id, s.mailbox_pool, m.address AS kept_mailbox,
           s.track_opens, s.track_clicks, s.variant_winner, ev.letter AS variant_letter,
           c.email, c.merge_values, c.opted_out,
           EXISTS (SELECT 1 FROM mailer.deliveries d
                   WHERE d.enrollment_id = v.enrollment_id AND d.step_id = v.step_id) AS sent,
           EXISTS (SELECT 1 FROM mailer.halted_enrollments h
                   WHERE h.enrollment_id = v.enrollment_id) AS halted,
           EXISTS (SELECT 1 FROM mailer.suppressions x
                   WHERE x.workspace_id = s.workspace_id
                   AND x.value IN (lower(c.email), split_part(lower(c.email), '@', 2)))
               AS suppressed,
           i.state AS intent_state, i.slot AS intent_slot,
           p.message_id AS previous_message_id, p.thread_subject AS previous_subject,
           p."references" AS previous_references
    FROM unnest(%(enrollments)b::uuid[], %(steps)b::uuid[], %(sequences)b::uuid[],
                %(contacts)b::uuid[]) AS v(enrollment_id, step_id, sequence_id, contact_id)
    JOIN mailer.sequences s ON s.sequence_id = v.sequence_id
    JOIN mailer.contacts c ON c.contact_id = v.contact_id
    LEFT JOIN mailer.send_intents i
        ON i.enrollment_id = v.enrollment_id AND i.step_id = v.step_id
    LEFT JOIN mailer.enrollment_mailboxes m ON m.enrollment_id = v.enrollment_id
    LEFT JOIN mailer.enrollment_variants ev ON ev.enrollment_id = v.enrollment_id
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
_ASSIGN = """
    INSERT INTO mailer.enrollment_mailboxes (enrollment_id, address, day)
    SELECT * FROM unnest(%(enrollments)b::uuid[], %(addresses)s::text[], %(days)s::date[])
    ON CONFLICT (enrollment_id) DO NOTHING
"""
_NOT_AWAITING = """
    UPDATE mailer.enrollment_mailboxes SET awaiting = false
    WHERE enrollment_id = ANY(%(enrollments)b::uuid[]) AND awaiting
"""
# A slot of the mailbox's day and hour, taken only while both have room. The hour's count
# starts over when the hour is a new one.
_TAKE_SLOT = text(
    """
    INSERT INTO mailer.mailbox_usage AS u (address, day, sent, last_slot, hour, hour_sent)
    VALUES (:address, :day, 1, :now, :hour, 1)
    ON CONFLICT (address, day) DO UPDATE
        SET sent = u.sent + 1,
            last_slot = greatest(:now, u.last_slot + :gap),
            hour_sent = CASE WHEN u.hour = :hour THEN u.hour_sent + 1 ELSE 1 END,
            hour = :hour
        WHERE u.sent < :cap AND (u.hour IS DISTINCT FROM :hour OR u.hour_sent < :hourly_cap)
    RETURNING sent, last_slot
    """
)
_SLOT_REFUSED = text("SELECT sent >= :cap AS day_full FROM mailer.mailbox_usage"
                     " WHERE address = :address AND day = :day")
_UNHEALTHY_WAIT = timedelta(minutes=10)  # a mailbox that cannot send: its emails wait this long


def _count_emails(results: _Results) -> None:
    """`sequences.emails` by outcome, mailbox and a reason of few values (a text's message,
    an SMTP code, a bounce class; never a free-form server reply). Sent ones are counted as
    the SMTP server accepts them (`_send`)."""
    for append in results.appends:
        for event in append.events:
            outcome, reason = _EMAIL_OUTCOMES.get(type(event), (None, None))
            if outcome is None:
                continue
            mailbox = results.senders.get(getattr(event, "enrollment_id", None), "")
            metrics.emails.add(1, {"outcome": outcome, "mailbox": mailbox,
                                   "reason": reason(event)})


def _text_reason(event) -> str:
    return event.reason_text.message if event.reason_text else "other"


_EMAIL_OUTCOMES = {
    EmailHeld: ("held", _text_reason),
    EmailDeferred: ("deferred", _text_reason),
    EmailFailed: ("failed", lambda event: str(event.smtp_code or "none")),
    BounceDetected: ("bounced", lambda event: event.bounce_class),
}


def _cannot_send(event: StepDue, address: str, problem: str, now: datetime) -> EmailDeferred:
    """The mailbox cannot send now (unhealthy, its login refused): the email waits, saying why
    (the server's or the check's words inside, as they came)."""
    why = said(N_("mailbox %(address)s cannot send: %(problem)s"), address=address,
               problem=problem[:900])
    return EmailDeferred(enrollment_id=event.enrollment_id, step_id=event.step_id,
                         until=now + _UNHEALTHY_WAIT, reason=why.english()[:1000],
                         reason_text=why)


def _step(steps: list[dict], step_id: uuid.UUID) -> dict | None:
    return next((s for s in steps if s["step_id"] == str(step_id)), None)


def _previous(found) -> PreviousEmail | None:
    """The last email of this enrollment: a step without subject continues its thread."""
    if found.previous_message_id is None:
        return None
    return PreviousEmail(found.previous_message_id, found.previous_subject,
                         tuple(found.previous_references))


def _failed(event: StepDue, reason: str, code: int, attempts: int) -> EmailFailed:
    """The step was not sent and will not be by itself: held for a person to retry."""
    return EmailFailed(enrollment_id=event.enrollment_id, sequence_id=event.sequence_id,
                       step_id=event.step_id, step_index=event.step_index, reason=reason[:1000],
                       smtp_code=code, attempts=attempts)


def _refusal(error: Exception) -> tuple[int | None, str]:
    """The SMTP code and text of a refusal (for several recipients, the first one's)."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused) and error.recipients:
        error = error.recipients[0]
    return getattr(error, "code", None), getattr(error, "message", str(error))
