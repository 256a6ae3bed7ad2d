"""The enrollment service's reactions to other services' events (its `enrollment-process`
consumer): emails sent, held or failed, replies, out-of-office answers and bounces move the
enrollments along, written as the commands write (`EnrollmentCommands.record`: the append and
this service's read models in one transaction).

Emails sent come in runs (a send time's batch): `on_emails_sent` handles a run as a set, in a
fixed number of statements whatever its length (one read of every enrollment's stream, the
sequences from the commands' cache, the pure `domain.complete_step` for each, one append).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.base import Event, EventEnvelope, decode_event, stream_id
from contracts.events import (
    AddressSuppressed,
    AutoReplyDetected,
    BounceDetected,
    EmailFailed,
    EmailHeld,
    EmailSent,
    EnrollmentBounced,
    EnrollmentPaused,
    EnrollmentReplied,
    ReplyDetected,
    SequenceStepFlagged,
)
from contracts.texts import (BOUNCE_REASON_WORDS, COLLEAGUE_REPLIED, CONTACT_OPTED_OUT,
                            HARD_BOUNCE, SOFT_BOUNCES, Text, said)
from contracts.values import AccountReply, next_step, suppression_id_for, suppression_target
from sequences import accounts
from sequences.eventlog.store import Append, Causation, ConcurrencyConflict, in_layers
from sequences.i18n import N_
from sequences.messaging.consumer import Delivery, HandBack, NotReady, Subscription, waves
from services.enrollment import domain
from services.enrollment.domain import BounceAction
from services.enrollment.handlers import EnrollmentCommands

_DECIDE_AGAIN = 3  # attempts of a run of emails sent whose append lost a race


@dataclass(frozen=True)
class BounceRateGuard:
    """A sequence pauses itself when more than `limit` of its deliveries in the last 24 hours
    bounced as bad addresses, once it made at least `minimum` of them."""

    limit: float = 0.05
    minimum: int = 20
    window: timedelta = timedelta(hours=24)

    @classmethod
    def from_env(cls) -> BounceRateGuard:
        return cls(limit=float(os.environ.get("BOUNCE_RATE_LIMIT", "0.05")),
                   minimum=int(os.environ.get("BOUNCE_RATE_MIN_DELIVERIES", "20")))


class EnrollmentProcess:
    def __init__(self, commands: EnrollmentCommands, soft_bounce_limit: int = 3,
                 guard: BounceRateGuard = BounceRateGuard(),
                 out_of_office_extra_days: int | None = None):
        self.runtime = commands.runtime
        # the commands' write pattern and reads: the same read models, the same sequence cache
        self._load, self._record, self._sequence = (commands.load, commands.record,
                                                    commands.load_sequence)
        self._contacts, self._stop = commands.contacts_of, commands.stop_enrollments
        self._add_suppression = commands.add_suppression
        self._active_enrollments = commands.active_enrollments
        # days after an out-of-office answer's return date before the next step (env
        # OUT_OF_OFFICE_EXTRA_DAYS, default 1: the day after "back on Monday" is Tuesday)
        self.out_of_office_extra_days = (int(os.environ.get("OUT_OF_OFFICE_EXTRA_DAYS", "1"))
                                         if out_of_office_extra_days is None
                                         else out_of_office_extra_days)
        self.soft_bounce_limit = soft_bounce_limit
        self.guard = guard

    # --- emails sent, as a set --------------------------------------------------------------

    async def on_emails_sent(self, run: list[EventEnvelope], conn: AsyncConnection
                             ) -> list[HandBack]:
        """Each email's step is done (and the enrollment, after its last one). An enrollment
        not seen yet is handed back (its ContactEnrolled is on its way), with its later emails
        of the run; an enrollment's second email of the run is decided, in a second wave, on
        what its first one wrote."""
        backs, unseen = [], set()
        for wave in waves(run):  # (a delivery stream is an enrollment's)
            backs += [HandBack(e.event_id) for e in wave if e.stream_id in unseen]
            wave = [e for e in wave if e.stream_id not in unseen]
            for envelope in await self._complete_steps(conn, wave) if wave else ():
                unseen.add(envelope.stream_id)
                backs.append(HandBack(envelope.event_id))
        return backs

    async def _complete_steps(self, conn: AsyncConnection, wave: list[EventEnvelope]) -> list:
        """One wave (each enrollment once); returns the emails whose enrollment is not seen
        yet. A lost race (a person stopped one of these enrollments meanwhile) rolls back to
        before the wave and decides it again on what is written now: no step is recorded twice
        or lost, and the rest of the run's work stays."""
        for attempt in range(_DECIDE_AGAIN):
            try:
                async with conn.begin_nested():
                    return await self._decide_wave(conn, wave)
            except ConcurrencyConflict:
                if attempt == _DECIDE_AGAIN - 1:
                    raise

    async def _decide_wave(self, conn: AsyncConnection, wave: list[EventEnvelope]) -> list:
        events = [decode_event(envelope) for envelope in wave]
        streams = await self.runtime.store.read_streams(
            conn, [stream_id("enrollment", e.enrollment_id) for e in events])
        sequences: dict[uuid.UUID, domain.Sequence] = {}
        unseen, appends = [], []
        for envelope, event in zip(wave, events):
            stream = stream_id("enrollment", event.enrollment_id)
            state = domain.replay([decode_event(e) for e in streams.get(stream, [])],
                                  domain.evolve)
            if state is None:
                unseen.append(envelope)
                continue
            if state.sequence_id not in sequences:
                sequences[state.sequence_id], _ = await self._sequence(conn, state.sequence_id)
            sequence = sequences[state.sequence_id]
            step = next((s for s in sequence.steps if s.step_id == event.step_id), None)
            if step is None:
                continue  # the step was deleted after it went out; nothing to move along
            appends.append(Append(stream, state.version, domain.complete_step(
                state, step, event.step_index, event.sent_at, sequence.steps, event.message_id),
                causation=Causation.following(envelope)))
        if appends:  # (in layers: the completions, then the endings, each one run)
            await self._record(conn, in_layers(appends), appends[0].causation)
        return unseen

    # --- one at a time ----------------------------------------------------------------------

    async def on_email_not_sent(self, event: EmailHeld | EmailFailed, d: Delivery) -> None:
        state, stream = await self._load(d.conn, "enrollment", event.enrollment_id, domain.evolve)
        if state is None:
            raise NotReady(f"enrollment {event.enrollment_id} not seen yet")
        if isinstance(event, EmailFailed):  # (the server's reply is its own words)
            why = said(N_("SMTP %(code)s after %(attempts)s attempts: %(reply)s"),
                       code=str(event.smtp_code), attempts=event.attempts, reply=event.reason)
        else:
            why = event.reason_text or Text(message=event.reason)
        reason = said(N_("step %(step)s not sent: %(why)s"), step=event.step_index + 1, why=why)
        await self._record(d.conn, [Append(stream, state.version,
                                           domain.hold(state, event.step_id, reason))],
                           d.causation)

    async def on_reply(self, event: ReplyDetected, d: Delivery) -> None:
        """The enrollment is Replied, with the reply's intent; a reply asking to be removed
        ("please remove me", "수신거부") opts the contact out as the link does."""
        await self._end(d, EnrollmentReplied(
            enrollment_id=event.enrollment_id, reply_message_id=event.message_id,
            replied_at=event.received_at, intent=event.intent))
        if event.intent == "unsubscribe":
            await self._opt_out_by_reply(event, d)
        await self._colleagues_replied(event, d)

    async def _colleagues_replied(self, event: ReplyDetected, d: Delivery) -> None:
        """Someone at the same company replied: the company's other active enrollments in the
        workspace stop, pause or go on, as each one's sequence says (`on_account_reply`)."""
        replier = (await d.conn.execute(_REPLIER, {"id": event.enrollment_id})).first()
        if replier is None:
            return
        core = accounts.company_name(replier.company)
        domain_ = accounts.email_domain(replier.email)
        rows = (await d.conn.execute(_POSSIBLE_COLLEAGUES, {
            "ws": replier.workspace_id, "contact": replier.contact_id,
            "domain": "" if accounts.is_free_mail(domain_) else domain_,
            "pattern": f"%{core}%" if core else ""})).all()
        stops, pauses = [], []
        for row in rows:
            same, by = accounts.same_company(replier.company, replier.email, row.company,
                                             row.email)
            if not same:
                continue
            sequence, _ = await self._sequence(d.conn, row.sequence_id)
            rule = sequence.settings.on_account_reply if sequence.settings else AccountReply()
            if rule.action == "stop":
                stops.append(row.enrollment_id)
            elif rule.action == "pause":
                pauses.append((row.enrollment_id, rule.pause_days, by))
        await self._stop(d.conn, stops, said(COLLEAGUE_REPLIED, email=replier.email),
                         d.causation)
        for enrollment_id, days, by in pauses:
            state, stream = await self._load(d.conn, "enrollment", enrollment_id, domain.evolve)
            paused = EnrollmentPaused(
                enrollment_id=enrollment_id, paused_at=event.received_at,
                until=event.received_at + timedelta(days=days), reason="account-reply",
                note=f"{replier.email} ({by}) replied")
            await self._record(d.conn, [Append(stream, state.version,
                                               domain.pause_enrollment(state, paused))],
                               d.causation)

    async def _opt_out_by_reply(self, event: ReplyDetected, d: Delivery) -> None:
        enrollment, _ = await self._load(d.conn, "enrollment", event.enrollment_id, domain.evolve)
        if enrollment is None:
            return
        contact = (await self._contacts(d.conn, [enrollment.contact_id], None)).get(
            enrollment.contact_id)
        if contact is None or contact.deleted:
            return
        stream = stream_id("contact", enrollment.contact_id)
        why = f"replied: {event.excerpt[:200]}" if event.excerpt else "replied asking to be removed"
        await self._record(d.conn, [Append(stream, contact.version, domain.opt_out(
            contact, event.received_at, "reply", why))], d.causation)
        await self._stop(d.conn, await self._active_enrollments(
            d.conn, contact_id=enrollment.contact_id), said(CONTACT_OPTED_OUT), d.causation)

    async def on_auto_reply(self, event: AutoReplyDetected, d: Delivery) -> None:
        """An out-of-office answer pauses the next step until its writer is back (plus
        `out_of_office_extra_days`), 7 days when it names no usable date."""
        state, stream = await self._load(d.conn, "enrollment", event.enrollment_id, domain.evolve)
        if state is None:
            raise NotReady(f"enrollment {event.enrollment_id} not seen yet")
        sequence, _ = await self._sequence(d.conn, state.sequence_id)
        zone = sequence.settings.timezone if sequence.settings else "UTC"
        until, why = domain.out_of_office_until(event.received_at, event.return_date, zone,
                                                self.out_of_office_extra_days)
        paused = EnrollmentPaused(enrollment_id=event.enrollment_id, paused_at=event.received_at,
                                  until=until, reason="out-of-office",
                                  return_date=event.return_date, note=why)
        events = domain.pause_enrollment(state, paused)
        await self._record(d.conn, [Append(stream, state.version, events)], d.causation)

    async def on_bounce(self, event: BounceDetected, d: Delivery) -> None:
        """By the bounce's class (domain.bounce_action): a bad address bounces the enrollment
        and is suppressed; a temporary one counts as soft (stopped once `soft_bounce_limit` of
        them are in its bounce stream); a sender-side or content-side rejection holds the
        enrollment without blaming the address (the mailer alerts the mailbox; a content-side
        one flags the step)."""
        action = domain.bounce_action(event.bounce_class, event.kind)
        if action in (BounceAction.hold_sender, BounceAction.hold_content):
            await self._hold_for_bounce(event, action, d)
            return
        if action is BounceAction.soft:
            bounces = await self.runtime.store.read_stream(d.conn, event.stream_id())
            if sum(1 for b in bounces if domain.counts_as_soft(b.data)) < self.soft_bounce_limit:
                return
        words = _bounce_words(event) or f"{event.kind} bounce"
        reason = said(HARD_BOUNCE, words=words, reason=said(
            BOUNCE_REASON_WORDS.get(event.reason or "", BOUNCE_REASON_WORDS["unclassified"])))
        if action is BounceAction.soft:
            reason = said(SOFT_BOUNCES, limit=self.soft_bounce_limit, words=words)
        await self._end(d, EnrollmentBounced(
            enrollment_id=event.enrollment_id, bounced_at=event.detected_at,
            # the API's English has always been the server's words alone
            reason=words if action is not BounceAction.soft else reason.english(),
            reason_text=reason,
            bounce_class=event.bounce_class, at_send=event.detected_by == "smtp"))
        if event.bounce_class == "recipient-permanent":
            await self._suppress_bounced(event, d)
            await self._guard_bounce_rate(event, d)

    async def _hold_for_bounce(self, event: BounceDetected, action: BounceAction,
                               d: Delivery) -> None:
        """Held on the step that was refused (at send time: the one not yet done; from a DSN:
        the next one, so nothing more goes out until someone retries)."""
        state, stream = await self._load(d.conn, "enrollment", event.enrollment_id, domain.evolve)
        if state is None or not state.is_open:
            return
        sequence, sequence_stream = await self._sequence(d.conn, state.sequence_id)
        pending = next_step(sequence.steps, state.completed)
        if action is BounceAction.hold_content:
            flagged = pending if event.detected_by == "smtp" else _sent_step(sequence, state)
            if flagged is not None:
                flag = SequenceStepFlagged(
                    sequence_id=sequence.sequence_id, step_id=flagged.step_id,
                    reason=event.reason, diagnostic=event.diagnostic,
                    flagged_at=event.detected_at)
                await self._record(d.conn, [Append(sequence_stream, sequence.version, [flag])],
                                   d.causation)
        if pending is None:
            return
        reason = domain.bounce_hold_reason(action, event.reason, _bounce_words(event))
        await self._record(d.conn, [Append(stream, state.version,
                                           domain.hold(state, pending.step_id, reason))],
                           d.causation)

    async def _suppress_bounced(self, event: BounceDetected, d: Delivery) -> None:
        """A bad address goes on the workspace's suppression list (reason "bounced")."""
        try:
            kind, value = suppression_target(event.recipient)
        except ValueError:
            return  # not an address we could ever mail again anyway
        workspace_id = d.envelope.workspace_id
        await self._add_suppression(d.conn, workspace_id, AddressSuppressed(
            suppression_id=suppression_id_for(workspace_id, value), value=value, kind=kind,
            reason="bounced", note=_bounce_words(event)[:500],
            added_at=event.detected_at), d.causation)

    async def _guard_bounce_rate(self, event: BounceDetected, d: Delivery) -> None:
        state, _ = await self._load(d.conn, "enrollment", event.enrollment_id, domain.evolve)
        sequence, stream = await self._sequence(d.conn, state.sequence_id)
        since = event.detected_at - self.guard.window
        numbers = (await d.conn.execute(_BOUNCE_RATE, {"id": sequence.sequence_id,
                                                       "since": since})).one()
        deliveries = numbers.sent + numbers.refused
        events = domain.guard_bounce_rate(sequence, event.detected_at, numbers.bounced,
                                          deliveries, self.guard.limit, self.guard.minimum)
        await self._record(d.conn, [Append(stream, sequence.version, events)], d.causation)

    async def _end(self, d: Delivery, ending: Event) -> None:
        state, stream = await self._load(d.conn, "enrollment", ending.enrollment_id, domain.evolve)
        if state is not None:
            await self._record(d.conn, [Append(stream, state.version, domain.end(state, ending))],
                               d.causation)


# the replier's company and address, and the active enrollments that may be its colleagues'
# (the same email domain, or a company field holding its name; accounts.same_company decides)
_REPLIER = text(
    "SELECT c.contact_id, c.company, c.email, e.workspace_id FROM enrollment.enrollments e"
    " JOIN enrollment.contacts c ON c.contact_id = e.contact_id WHERE e.enrollment_id = :id")
_POSSIBLE_COLLEAGUES = text(
    "SELECT e.enrollment_id, e.sequence_id, c.company, c.email FROM enrollment.enrollments e"
    " JOIN enrollment.contacts c ON c.contact_id = e.contact_id"
    " WHERE e.workspace_id = :ws AND e.status = 'active' AND e.contact_id <> :contact"
    " AND NOT c.deleted AND ((:domain <> '' AND split_part(lower(c.email), '@', 2) = :domain)"
    "   OR (:pattern <> '' AND lower(c.company) LIKE :pattern))")

# the bounce-rate guard's numbers for one sequence since a moment: emails sent, bad-address
# bounces, and those of them refused at send time (never counted as sent, still a delivery)
_BOUNCE_RATE = text(
    "SELECT (SELECT count(*) FROM enrollment.step_completions"
    "        WHERE sequence_id = :id AND channel = 'email' AND completed_at > :since) AS sent,"
    " count(*) FILTER (WHERE bounced_at_send) AS refused, count(*) AS bounced"
    " FROM enrollment.enrollments WHERE sequence_id = :id AND status = 'bounced'"
    " AND bounce_class = 'recipient-permanent' AND last_activity_at > :since")


def _bounce_words(event: BounceDetected) -> str:
    """The status and the diagnostic, the status once (a diagnostic often repeats it)."""
    if event.status and event.status in event.diagnostic:
        return event.diagnostic.strip()
    return f"{event.status or ''} {event.diagnostic}".strip()


def _sent_step(sequence: domain.Sequence, state: domain.Enrollment):
    """The step an enrollment's last email was (a DSN answers the last one sent)."""
    if not state.completed:
        return None
    return next((s for s in sequence.steps if s.step_id == state.completed[-1]), None)


def process_subscription(process: EnrollmentProcess) -> Subscription:
    """Reactions to other services' events that move enrollments along."""
    subscription = Subscription("enrollment-process", ["delivery", "inbox", "bounce"])
    subscription.on_batch(EmailSent)(process.on_emails_sent)
    subscription.on(EmailHeld)(process.on_email_not_sent)
    subscription.on(EmailFailed)(process.on_email_not_sent)
    subscription.on(ReplyDetected)(process.on_reply)
    subscription.on(AutoReplyDetected)(process.on_auto_reply)
    subscription.on(BounceDetected)(process.on_bounce)
    return subscription
