"""The plan of a batch of due steps, pure: which steps of the batch go now, and for each one
the mailbox it goes from and its rendered message, or what it comes to instead (a task, held,
deferred, handed back). It reads only what `sending.StepSender` fetched for the batch
(`Facts`) and talks to nothing: sending (`smtp_sends`) and recording (`batch_record`) come
after it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from contracts.base import EventEnvelope, decode_event
from contracts.events import EmailDeferred, EmailFailed, EmailHeld, EmailSent, StepDue, TaskDue
from contracts.events import VariantAssigned
from contracts.texts import TextError, said
from contracts.values import Channel
from sequences import variants as variants_rules
from sequences.eventlog.store import ANY_VERSION, Append, Causation
from sequences.i18n import N_
from sequences.link_tracking import Link
from sequences.messaging.consumer import HandBack
from sequences.signing import Signer
from sequences.tracing import TRACEPARENT, TRACESTATE
from services.mailer.adapters import Mailbox, Mailboxes
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
from services.mailer.pools import Pools, mailbox_of

_TASK_NAMESPACE = uuid.UUID("3d5a7a52-8f0e-4c2b-9f57-0d6c1f9a2b44")
PAUSED_RECHECK = timedelta(minutes=15)  # a step from a paused mailbox is tried again after
UNHEALTHY_WAIT = timedelta(minutes=10)  # a mailbox that cannot send: its emails wait this long


@dataclass(frozen=True)
class Send:
    """An email about to go out for a due step."""

    envelope: EventEnvelope
    event: StepDue
    found: object  # the step's row of `sending._SITUATIONS`
    mailbox: Mailbox
    message: object  # domain.Message
    email: OutgoingEmail

    @property
    def unrecorded(self) -> bool:
        """A crash came between an earlier send of this email and its record."""
        return self.found.intent_state == "sending"


@dataclass
class Outcome:
    """What a batch of due steps came to, written in one go at its end (`batch_record`)."""

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


@dataclass(frozen=True)
class LinkSigner:
    """Signed links: the gateway takes their workspace and ids as they say (no API key), and
    shows the unsubscribe page in the sequence's language ("l"). The pixel and the click
    redirects point at the tracking URL (a custom tracking domain) when one is set. A click
    token signs the link's URL with the email's ids: the redirect goes only where this email's
    body pointed (no open redirect)."""

    signer: Signer
    public_url: str
    tracking_url: str | None = None

    def links(self, workspace_id, enrollment_id, step_id, contact_id, language: str,
              track_opens: bool = True, track_clicks: bool = True) -> Links:
        base = self.public_url.rstrip("/")
        tracking = (self.tracking_url or self.public_url).rstrip("/")
        ids = {"w": str(workspace_id), "e": str(enrollment_id), "s": str(step_id)}
        unsubscribe = self.signer.sign("unsubscribe",
                                       {"w": ids["w"], "c": str(contact_id), "l": language})
        pixel = f"{tracking}/t/{self.signer.sign('open', ids)}.gif" if track_opens else None

        def redirect(link: Link) -> str:
            return f"{tracking}/c/{self.signer.sign('click', {**ids, 'i': link.index, 'u': link.url})}"

        return Links(pixel, f"{base}/unsubscribe/{unsubscribe}",
                     redirect if track_clicks else None)


@dataclass(frozen=True)
class Facts:
    """What the plan of a batch reads, fetched before it."""

    situations: dict  # (enrollment, step) -> its row of `sending._SITUATIONS`
    pools: Pools  # the mailboxes of the batch's pools, and what each sent today
    paused: dict[str, str]  # sender mailboxes paused for sender-side rejections -> why
    now: datetime
    mailboxes: Mailboxes  # the mailboxes configured by MAILBOXES
    links: LinkSigner


def due_steps(run: list[EventEnvelope]) -> tuple[list[tuple[EventEnvelope, StepDue]],
                                                 list[HandBack]]:
    """The steps of the batch to handle now, and those handed back: a second step of one
    enrollment waits for the first."""
    seen: set[uuid.UUID] = set()
    steps, handed_back = [], []
    for envelope in run:
        event = decode_event(envelope)
        if event.enrollment_id in seen:
            handed_back.append(HandBack(envelope.event_id))
            continue
        seen.add(event.enrollment_id)
        steps.append((envelope, event))
    return steps, handed_back


def plan(steps: list[tuple[EventEnvelope, StepDue]], facts: Facts,
         outcome: Outcome) -> list[Send]:
    """The emails to send for `steps`; what the others come to goes into `outcome`. A step
    whose sequence or contact is not known yet is handed back."""
    sends = []
    for envelope, event in steps:
        found = facts.situations.get((event.enrollment_id, event.step_id))
        if found is None:  # sequence or contact not seen yet
            outcome.handed_back.append(HandBack(envelope.event_id))
        elif send := _plan_step(envelope, event, found, facts, outcome):
            sends.append(send)
    return sends


def _plan_step(envelope, event: StepDue, found, facts: Facts, outcome: Outcome) -> Send | None:
    """The email to send for a due step, or None when there is none: a task instead, the
    step sent already, held, deferred, or the enrollment or contact gone."""
    if event.channel != Channel.email:
        _task_for(envelope, event, found, outcome)
        return None
    if found.sent or found.halted or found.opted_out:
        return None  # sent already, or the enrollment ended, or the contact opted out
    step = _step(found.steps, event.step_id)
    if step is None:
        return None  # the step was deleted after it fell due
    step = _variant_of(envelope, event, found, step, facts.now, outcome)
    unrecorded = found.intent_state == "sending"  # it may have gone: no second thoughts now
    if not unrecorded and _suppressed(envelope, event, found, outcome):
        return None
    mailbox = _mailbox_for(envelope, event, found, facts, outcome)
    if mailbox is None:
        return None
    if not unrecorded and _paused(envelope, event, mailbox.address, facts, outcome):
        return None
    try:
        email = _compose(envelope, event, found, step, mailbox, facts)
        message = build_message(email)
    except ValueError as error:  # (MissingMergeValue is one)
        outcome.append(envelope, EmailHeld(
            enrollment_id=event.enrollment_id, sequence_id=event.sequence_id,
            step_id=event.step_id, step_index=event.step_index, reason=str(error),
            reason_text=error.text if isinstance(error, TextError) else None))
        return None
    return Send(envelope, event, found, mailbox, message, email)


def _variant_of(envelope, event: StepDue, found, step: dict, now: datetime,
                outcome: Outcome) -> dict:
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
        outcome.letters.append((event.enrollment_id, letter))
        outcome.append(envelope, VariantAssigned(
            enrollment_id=event.enrollment_id, sequence_id=event.sequence_id,
            letter=letter, assigned_at=now))
    used = found.variant_winner or letter
    index = variants_rules.LETTERS.index(used)
    if index >= len(variants):  # a letter this step has no variant for: the step itself
        return step
    chosen = variants[index]
    return {**step, "subject": chosen.get("subject") or step.get("subject"),
            "body": chosen["body"], "variant": used}


def _suppressed(envelope, event: StepDue, found, outcome: Outcome) -> bool:
    """Never sent to a suppressed address or domain: held (the enrollment needs someone)."""
    if not found.suppressed:
        return False
    outcome.append(envelope, EmailHeld(
        enrollment_id=event.enrollment_id, sequence_id=event.sequence_id,
        step_id=event.step_id, step_index=event.step_index,
        reason=f"{found.email} (or its domain) is on the suppression list"))
    return True


def _paused(envelope, event: StepDue, address: str, facts: Facts, outcome: Outcome) -> bool:
    """Never sent from a mailbox paused for sender-side rejections: deferred (tried again a
    while later, so it goes soon after someone resumes the mailbox)."""
    if address.lower() not in facts.paused:
        return False
    outcome.append(envelope, EmailDeferred(
        enrollment_id=event.enrollment_id, step_id=event.step_id,
        until=facts.now + PAUSED_RECHECK,
        reason=f"the sender mailbox {address} is paused until someone resumes it:"
               f" {facts.paused[address.lower()]}"[:1000]))
    return True


def _mailbox_for(envelope, event: StepDue, found, facts: Facts,
                 outcome: Outcome) -> Mailbox | None:
    """The mailbox this email goes from: the one the enrollment got from the sequence's
    pool (a new enrollment gets the one with the most room today), else the sequence's
    sender, as a connected mailbox of the workspace or from MAILBOXES. None when it must
    wait: no pool mailbox is connected, or its mailbox (a new enrollment's: every connected
    one of the pool) cannot send now (nothing goes from another mailbox instead: the thread
    stays with its mailbox)."""
    pools = facts.pools
    address = found.sender_email
    if found.mailbox_pool:
        address = found.kept_mailbox or pools.choose(found)
        if address is None and (waiting := pools.unhealthy(found)) is not None:
            # the pool's connected mailboxes all cannot send (a login refused, for another
            # enrollment in an earlier batch): the email waits, as those kept on it do, and
            # gets its mailbox when it is tried again
            outcome.append(envelope, cannot_send(event, waiting.address, waiting.problem or "",
                                                 facts.now))
            return None
        if address is None:
            why = said(N_("none of the sequence's mailboxes is connected: %(mailboxes)s"),
                       mailboxes=", ".join(found.mailbox_pool))
            outcome.append(envelope, EmailHeld(
                enrollment_id=event.enrollment_id, sequence_id=event.sequence_id,
                step_id=event.step_id, step_index=event.step_index,
                reason=why.english(), reason_text=why))
            return None
        if found.kept_mailbox is None:
            outcome.assigned.append((event.enrollment_id, address, pools.today(found)))
    connected = pools.connected(found.workspace_id, address)
    if connected is None:
        return facts.mailboxes.for_address(address)
    if not connected.healthy:
        outcome.append(envelope, cannot_send(event, address, connected.problem, facts.now))
        return None
    return mailbox_of(connected, pools.cap(connected, found))


def _compose(envelope: EventEnvelope, event: StepDue, found, step, mailbox: Mailbox,
             facts: Facts) -> OutgoingEmail:
    """`found`: the sender, timezone, language and the contact's address and merge values;
    the email goes from `mailbox`, under its display name when it has one."""
    values = found.merge_values
    links = facts.links.links(envelope.workspace_id, event.enrollment_id, event.step_id,
                              event.contact_id, found.language, found.track_opens,
                              found.track_clicks)
    subject = render(step["subject"], values) if step.get("subject") else None
    return OutgoingEmail(
        sender_name=mailbox.display_name or found.sender_name,
        # the sequence's sender as written, unless a mailbox of the workspace sends it
        sender_email=(mailbox.address if mailbox.connected or found.mailbox_pool
                      else found.sender_email),
        recipient=found.email,
        thread=thread_for(subject, _previous(found)),
        text_body=text_body_for(step["body"], values, links, language=found.language),
        html_body=html_body_for(step["body"], values, links, language=found.language),
        message_id=message_id_for(event.enrollment_id, event.step_id, mailbox.address),
        date=facts.now.astimezone(ZoneInfo(found.timezone)),
        unsubscribe_url=links.unsubscribe_url,
        variant=step.get("variant"),
    )


def _task_for(envelope, event: StepDue, found, outcome: Outcome) -> None:
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
    outcome.append(envelope, task)


def email_sent(event: StepDue, email: OutgoingEmail) -> EmailSent:
    return EmailSent(
        enrollment_id=event.enrollment_id, sequence_id=event.sequence_id,
        contact_id=event.contact_id, step_id=event.step_id, step_index=event.step_index,
        message_id=email.message_id, recipient=email.recipient, subject=email.thread.subject,
        sent_at=email.date, in_reply_to=email.thread.in_reply_to,
        references=list(email.thread.references), variant=email.variant)


def cannot_send(event: StepDue, address: str, problem: str, now: datetime) -> EmailDeferred:
    """The mailbox cannot send now (unhealthy, its login refused): the email waits, saying why
    (the server's or the check's words inside, as they came)."""
    why = said(N_("mailbox %(address)s cannot send: %(problem)s"), address=address,
               problem=problem[:900])
    return EmailDeferred(enrollment_id=event.enrollment_id, step_id=event.step_id,
                         until=now + UNHEALTHY_WAIT, reason=why.english()[:1000],
                         reason_text=why)


def failed(event: StepDue, reason: str, code: int, attempts: int) -> EmailFailed:
    """The step was not sent and will not be by itself: held for a person to retry."""
    return EmailFailed(enrollment_id=event.enrollment_id, sequence_id=event.sequence_id,
                       step_id=event.step_id, step_index=event.step_index, reason=reason[:1000],
                       smtp_code=code, attempts=attempts)


def _step(steps: list[dict], step_id: uuid.UUID) -> dict | None:
    return next((s for s in steps if s["step_id"] == str(step_id)), None)


def _previous(found) -> PreviousEmail | None:
    """The last email of this enrollment: a step without subject continues its thread."""
    if found.previous_message_id is None:
        return None
    return PreviousEmail(found.previous_message_id, found.previous_subject,
                         tuple(found.previous_references))
