"""The mailer's due steps: each due email step becomes one sent email (and each due SMS or
call step a task for its owner), a fetched batch at a time, in steps kept apart:
`StepSender.on_steps_due` reads what the batch needs (`Facts`), plans it (`batch_plan`, pure:
each step's email and mailbox, or what it comes to instead), clears what the plan cannot know
(a sending slot of a limited mailbox, whether an unrecorded send arrived), sends over the
mailboxes' SMTP pools (`smtp_sends`) and records the run (`batch_record`).

Sent once: due steps are handled a fetched batch at a time inside the consumer's transaction,
which holds the locks on their enrollments' schedule-stream positions, so a redelivered StepDue
or a second replica waits and then finds the step sent. Before talking to the SMTP server the
mailer commits the batch's send intents on a connection of its own; the transaction that records
the sends removes them. An intent found on a later attempt means the mailer died between the SMTP
server's acceptance and the record: it then asks the verifier whether the message arrived before
sending again (README, "Guarantees").
"""

from __future__ import annotations

import logging
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import text

from contracts.base import EventEnvelope
from contracts.events import EmailDeferred, StepDue
from contracts.texts import said
from sequences import metrics
from sequences.bootstrap import Runtime
from sequences.encryption import SecretBox
from sequences.faults import crash_point
from sequences.i18n import N_
from sequences.messaging.consumer import HandBack, delivery_attempt, retry_delay
from sequences.oauth import AccessTokens
from sequences.signing import Signer
from services.mailer.adapters import CaptureVerifier, Mailboxes
from services.mailer.batch_plan import Facts, LinkSigner, Outcome, Send, due_steps, email_sent, plan
from services.mailer.batch_record import record
from services.mailer.domain import OutgoingEmail
from services.mailer.pools import Pools, gap_with_jitter
from services.mailer.smtp_sends import SmtpSends

log = logging.getLogger(__name__)


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
        self.signer = signer
        self.verifier = verifier
        self.smtp = SmtpSends(mailboxes, runtime.clock, retry_limit, tokens)

    async def on_steps_due(self, run: list[EventEnvelope], conn) -> list[HandBack]:
        """Due steps, many at once: one query for what they need, a plan of what each comes
        to (`batch_plan`), one commit of the send intents, the messages sent concurrently over
        the SMTP pools (`smtp_sends`), one record of what happened (`batch_record`). A step
        whose sequence or contact is not known yet, or whose email the server refused for
        now, is handed back; the others are done."""
        steps, handed_back = due_steps(run)
        outcome = Outcome(handed_back=handed_back)
        sends = plan(steps, await self._facts(conn, [event for _, event in steps]), outcome)
        sends = [send for send in sends if await self._cleared(send, outcome)]
        if sends:
            await self._set_intents([(s.event, s.email.message_id, None) for s in sends],
                                    "sending")
            crash_point("mailer.before_smtp")
            await self.smtp.send_all(sends, outcome)
        await record(conn, self.runtime.store, outcome, self.runtime.clock.now())
        return outcome.handed_back

    async def _facts(self, conn, events: list[StepDue]) -> Facts:
        situations = await self._situations(conn, events)
        now = self.runtime.clock.now()
        pools = await Pools.of(conn, self.box, list(situations.values()), now)
        paused = dict((await conn.execute(_PAUSED_MAILBOXES)).all())
        settings = self.runtime.settings
        links = LinkSigner(self.signer, settings.public_url, settings.tracking_url)
        return Facts(situations, pools, paused, now, self.mailboxes, links)

    async def _situations(self, conn, events: list[StepDue]) -> dict:
        """Everything the due steps need, in one query, by (enrollment, step)."""
        if not events:
            return {}
        rows = await conn.exec_driver_sql(_SITUATIONS, {
            "enrollments": [e.enrollment_id for e in events], "steps": [e.step_id for e in events],
            "sequences": [e.sequence_id for e in events],
            "contacts": [e.contact_id for e in events]})
        return {(row.enrollment_id, row.step_id): row for row in rows}

    async def _cleared(self, send: Send, outcome: Outcome) -> bool:
        """Whether a planned email goes now: one a crash left unrecorded goes again only if
        it did not arrive, one of a limited mailbox only in a sending slot of it."""
        if send.unrecorded:
            try:
                arrived = await self._arrived(send.email)
            except DeliveryUnknown as unknown:
                log.warning("%s", unknown)
                outcome.handed_back.append(
                    HandBack(send.envelope.event_id, retry_delay(delivery_attempt(send.envelope))))
                return False
            if arrived:
                outcome.sent.append((send.event, send.email))  # it went through before the crash
                metrics.emails.add(1, {"outcome": "sent", "mailbox": send.mailbox.address,
                                       "reason": ""})
                outcome.append(send.envelope, email_sent(send.event, send.email))
                return False
        return not send.mailbox.limited or await self._slot(send, outcome)

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

    async def _slot(self, send: Send, outcome: Outcome) -> bool:
        """Per-mailbox daily cap and minimum gap: take a sending slot, or defer the step to the
        next allowed moment (the scheduler fires it again then). Never dropped."""
        envelope, event, email, mailbox, found = (send.envelope, send.event, send.email,
                                                  send.mailbox, send.found)
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
        outcome.append(envelope, EmailDeferred(
            enrollment_id=event.enrollment_id, step_id=event.step_id, until=until,
            reason=reason.english(), reason_text=reason))
        return False

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


_SLACK = timedelta(seconds=2)
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
