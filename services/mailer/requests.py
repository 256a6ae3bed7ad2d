"""The mailer's requests: a step's preview and test email, opens and clicks recorded (each
judged human or machine), and an A/B winner chosen by hand."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import text

from contracts.commands import (
    ChooseVariantWinner,
    PreviewStep,
    RecordEmailClick,
    RecordEmailClicks,
    RecordEmailOpen,
    SendTestEmail,
)
from contracts.events import (
    EmailClicked,
    EmailOpened,
    VariantWinnerChosen,
    TestEmailSent,
)
from contracts.base import stream_id
from contracts.values import Channel, TrackedRequest
from contracts.views import Created, StepPreview
from sequences.bootstrap import Runtime
from sequences.eventlog.store import ANY_VERSION, Append, Causation
from sequences.messaging.consumer import Delivery
from sequences.messaging.rpc import Rejected
from sequences import machine_rules
from sequences import variants as variants_rules
from services.mailer.adapters import Mailboxes
from services.mailer.domain import (
    SAMPLE_CONTACT,
    MissingMergeValue,
    OutgoingEmail,
    build_message,
    html_body_for,
    render,
    text_body_for,
    thread_for,
)

log = logging.getLogger(__name__)
_CATCH_UP_SECONDS = 5.0  # how long a preview waits for a just-saved sequence or contact


class MailerRequests:
    def __init__(self, runtime: Runtime, mailboxes: Mailboxes):
        self.runtime = runtime
        self.mailboxes = mailboxes

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
        await self.runtime.store.commit_append(
            self.runtime.engine, [Append(sent.stream_id(), ANY_VERSION, [sent])],
            Causation.new(command.workspace_id))
        return Created(id=command.step_id)

    async def _step_for_request(self, request: PreviewStep | SendTestEmail):
        """The step, the merge values (of the chosen contact or a sample one) and the sequence,
        of the request's workspace."""
        return await self._caught_up(request, lambda: self._find_step(request))

    async def _caught_up(self, request: PreviewStep | SendTestEmail | ChooseVariantWinner,
                         attempt):
        """`attempt()`, once the mailer knows the request's sequence (and contact). It learns of
        them from their events a moment after they are saved: one that is in the log but not
        here yet is waited for (a preview right after saving answers, not 404), up to a few
        seconds."""
        clock = asyncio.get_running_loop()
        deadline = clock.time() + _CATCH_UP_SECONDS
        while True:
            try:
                return await attempt()
            except Rejected as rejected:
                missing = rejected.problem.errors[0].field if rejected.problem.errors else None
                if (missing not in ("sequence_id", "contact_id") or clock.time() > deadline
                        or not await self._in_log(request, missing)):
                    raise
                await asyncio.sleep(0.1)

    async def _in_log(self, request: PreviewStep | SendTestEmail | ChooseVariantWinner,
                      field: str) -> bool:
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
        """EmailOpened, a person's or a machine's (sequences/machine_rules.py)."""
        async with self.runtime.engine.begin() as conn:
            delivered = await self._delivered(conn, command)
            now = self.runtime.clock.now()
            verdict = self._verdict("open", command.request, now, delivered.sent_at, None)
            opened = EmailOpened(enrollment_id=command.enrollment_id, step_id=command.step_id,
                                 message_id=delivered.message_id, opened_at=now,
                                 machine=verdict.machine,
                                 machine_rule=verdict.rule if verdict.machine else None)
            await self.runtime.store.append(
                conn, [Append(opened.stream_id(), ANY_VERSION, [opened])],
                Causation.new(command.workspace_id))
        return Created(id=command.enrollment_id)

    async def record_click(self, command: RecordEmailClick) -> Created:
        """EmailClicked, a person's or a machine's (from gateways before click batches)."""
        async with self.runtime.engine.begin() as conn:
            delivered = await self._delivered(conn, command)
            await self._click(conn, command.workspace_id, command, delivered,
                              self.runtime.clock.now(), None)
        return Created(id=command.enrollment_id)

    async def record_clicks(self, command: RecordEmailClicks) -> Created:
        """The gateway's batch of clicks, in one transaction: each one an EmailClicked, in the
        order they came; a click of an email we never sent is left out (its token was signed
        by us, so only a deleted delivery gets there), a click id seen before too."""
        now = self.runtime.clock.now()
        emails: dict[tuple, object] = {}  # a scanner's burst is many clicks of one email
        async with self.runtime.engine.begin() as conn:
            events: dict[str, list[EmailClicked]] = {}  # by stream, in the clicks' order
            for click in command.clicks:
                key = (click.enrollment_id, click.step_id)
                if key not in emails:
                    emails[key] = await self._delivery(conn, *key)
                if emails[key] is None:
                    log.warning("a click of enrollment %s: no such email", click.enrollment_id)
                    continue
                clicked = await self._judged_click(
                    conn, click, emails[key], now - timedelta(seconds=click.seconds_ago),
                    click.click_id)
                if clicked is not None:
                    events.setdefault(clicked.stream_id(), []).append(clicked)
            if events:  # one append for the batch
                await self.runtime.store.append(
                    conn, [Append(stream, ANY_VERSION, clicks) for stream, clicks in events.items()],
                    Causation.new(command.workspace_id))
        return Created(id=command.workspace_id)

    async def _click(self, conn, workspace_id: uuid.UUID, click, delivered, at: datetime,
                     click_id: uuid.UUID | None) -> None:
        clicked = await self._judged_click(conn, click, delivered, at, click_id)
        if clicked is not None:
            await self.runtime.store.append(
                conn, [Append(clicked.stream_id(), ANY_VERSION, [clicked])],
                Causation.new(workspace_id))

    async def _judged_click(self, conn, click, delivered, at: datetime,
                            click_id: uuid.UUID | None) -> EmailClicked | None:
        """One click: kept for the burst rule (a click of another link of the same email
        within a second makes it a scanner's) and judged; None when its id was seen before."""
        ids = {"e": click.enrollment_id, "s": click.step_id, "i": click.link_index, "at": at}
        nearest = (await conn.execute(text(
            "SELECT min(abs(extract(epoch FROM clicked_at - :at))) FROM mailer.clicks"
            " WHERE enrollment_id = :e AND step_id = :s AND link_index <> :i"
            " AND clicked_at BETWEEN :at - interval '1 minute' AND :at + interval '1 minute'"),
            ids)).scalar()
        kept = (await conn.execute(text(
            "INSERT INTO mailer.clicks (enrollment_id, step_id, link_index, clicked_at, click_id)"
            " VALUES (:e, :s, :i, :at, :id)"
            " ON CONFLICT (click_id) WHERE click_id IS NOT NULL DO NOTHING RETURNING 1"),
            {**ids, "id": click_id})).first()
        if kept is None:
            return None  # this click was recorded before (its batch came again)
        verdict = self._verdict("click", click.request, at, delivered.sent_at,
                                float(nearest) if nearest is not None else None)
        return EmailClicked(
            enrollment_id=click.enrollment_id, step_id=click.step_id,
            message_id=delivered.message_id, link_index=click.link_index,
            url=click.url, clicked_at=at, machine=verdict.machine,
            machine_rule=verdict.rule if verdict.machine else None)

    async def choose_winner(self, command: ChooseVariantWinner) -> Created:
        """VariantWinnerChosen by hand; the mailer's own handler of it routes new sends."""
        return await self._caught_up(command, lambda: self._choose_winner(command))

    async def _choose_winner(self, command: ChooseVariantWinner) -> Created:
        async with self.runtime.engine.begin() as conn:
            sequence = (await conn.execute(text(
                "SELECT steps FROM mailer.sequences WHERE sequence_id = :id AND workspace_id = :ws"),
                {"id": command.sequence_id, "ws": command.workspace_id})).first()
            if sequence is None:
                raise Rejected(404, f"no such sequence: {command.sequence_id}", "sequence_id")
            most = max((len(s.get("variants") or []) for s in sequence.steps), default=0)
            if variants_rules.LETTERS.index(command.letter) >= most:
                raise Rejected(422, f"no step of this sequence has a variant {command.letter}",
                               "letter")
            chosen = VariantWinnerChosen(sequence_id=command.sequence_id, letter=command.letter,
                                         by="hand", chosen_by=command.chosen_by,
                                         chosen_at=self.runtime.clock.now())
            await self.runtime.store.append(
                conn, [Append(chosen.stream_id(), ANY_VERSION, [chosen])],
                Causation.new(command.workspace_id))
            await self._route_to_winner(conn, chosen)
        return Created(id=command.sequence_id)

    async def on_winner_chosen(self, event: VariantWinnerChosen, d: Delivery) -> None:
        """A winner chosen by the automatic rule (services/enrollment/variant_judge.py), or by
        hand (routed already when it was chosen)."""
        await self._route_to_winner(d.conn, event)

    @staticmethod
    async def _route_to_winner(conn, event: VariantWinnerChosen) -> None:
        await conn.execute(text("UPDATE mailer.sequences SET variant_winner = :l"
                                " WHERE sequence_id = :id"),
                           {"l": event.letter, "id": event.sequence_id})

    async def _delivered(self, conn, command: RecordEmailOpen | RecordEmailClick):
        delivered = await self._delivery(conn, command.enrollment_id, command.step_id)
        if delivered is None:
            raise Rejected(404, "no such email", "token")
        return delivered

    @staticmethod
    async def _delivery(conn, enrollment_id: uuid.UUID, step_id: uuid.UUID):
        return (await conn.execute(
            text("SELECT message_id, sent_at FROM mailer.deliveries"
                 " WHERE enrollment_id = :e AND step_id = :s"),
            {"e": enrollment_id, "s": step_id})).first()

    @staticmethod
    def _verdict(kind, seen: TrackedRequest | None, now: datetime, sent_at: datetime,
                 other_link_within: float | None) -> machine_rules.Verdict:
        if seen is None:  # from a gateway before the rules: nothing to decide by
            return machine_rules.Verdict(False, None)
        return machine_rules.classify(machine_rules.Facts(
            kind=kind, method=seen.method, user_agent=seen.user_agent,
            client_ip=seen.client_ip, seconds_since_sent=(now - sent_at).total_seconds(),
            other_link_clicked_within=other_link_within))
