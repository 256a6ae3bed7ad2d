"""Sender mailboxes' deliverability: sender-side rejections (failed SPF/DKIM/DMARC, a blocked
sender, a policy refusal) are counted per sender address; after `pause_after` of them within
`window` (since the mailbox was last resumed) its sends are paused until someone resumes it.

The state is the mailer's, keyed by the sender address: `MailboxPaused` / `MailboxResumed` on
the stream `mailbox-<address>`, and `mailer.mailbox_states`, written with each event.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text

from contracts.commands import GetMailboxDeliverability, ResumeMailbox
from contracts.events import BounceDetected, MailboxPaused, MailboxResumed
from contracts.views import MailboxDeliverabilityView
from sequences.bootstrap import Runtime
from sequences.eventlog.store import ANY_VERSION, Append, Causation
from sequences.messaging.consumer import Delivery
from sequences.messaging.rpc import Rejected
from services.mailer.domain import should_pause_mailbox


@dataclass(frozen=True)
class PausePolicy:
    pause_after: int = 3
    window: timedelta = timedelta(hours=1)

    @classmethod
    def from_env(cls) -> PausePolicy:
        return cls(pause_after=int(os.environ.get("MAILBOX_PAUSE_AFTER", "3")),
                   window=timedelta(minutes=float(os.environ.get("MAILBOX_PAUSE_WINDOW_MINUTES",
                                                                 "60"))))


class MailboxGuard:
    def __init__(self, runtime: Runtime, policy: PausePolicy = PausePolicy()):
        self.runtime = runtime
        self.policy = policy

    async def on_bounce(self, event: BounceDetected, d: Delivery) -> None:
        """A sender-side rejection counts against the mailbox that sent the email."""
        if event.bounce_class != "sender-side":
            return
        sender = (await d.conn.execute(_SENDER_OF, {
            "stream": f"schedule-{event.enrollment_id}", "enrollment": event.enrollment_id})).first()
        if sender is None:
            return  # not an email of ours (a test send, or an enrollment of long ago)
        address = sender.sender_email.lower()
        detail = f"{event.reason}: {event.status or ''} {event.diagnostic}".strip()[:500]
        await d.conn.execute(_REJECTED, {"id": d.envelope.event_id, "address": address,
                                         "reason": event.reason, "detail": detail,
                                         "at": event.detected_at})
        state = await self._locked_state(d.conn, address)
        rejections = await self._rejections(d.conn, address, event.detected_at, state)
        if not should_pause_mailbox(rejections, self.policy.pause_after, state.paused):
            return
        paused = MailboxPaused(
            address=address, paused_at=event.detected_at, bounce_reason=event.reason,
            reason=f"{rejections} sender-side rejections within {_minutes(self.policy.window)}"
                   f" minutes; the last: {detail}")
        await self.runtime.store.append(
            d.conn, [Append(paused.stream_id(), ANY_VERSION, [paused])], d.causation)
        await d.conn.execute(
            text("UPDATE mailer.mailbox_states SET paused = true, paused_at = :at,"
                 " reason = :reason, bounce_reason = :bounce_reason WHERE address = :address"),
            {"address": address, "at": paused.paused_at, "reason": paused.reason,
             "bounce_reason": paused.bounce_reason})

    async def resume(self, command: ResumeMailbox) -> MailboxDeliverabilityView:
        """A person decided the cause is fixed: its sends go on; earlier rejections no longer
        count towards the next pause."""
        address = command.address.lower()
        async with self.runtime.engine.begin() as conn:
            await self._known(conn, command.workspace_id, address)
            state = await self._locked_state(conn, address)
            if state.paused:
                resumed = MailboxResumed(address=address, resumed_at=self.runtime.clock.now(),
                                         by=command.by)
                await self.runtime.store.append(
                    conn, [Append(resumed.stream_id(), ANY_VERSION, [resumed])],
                    Causation.new(command.workspace_id))
                await conn.execute(
                    text("UPDATE mailer.mailbox_states SET paused = false, resumed_at = :at"
                         " WHERE address = :address"),
                    {"address": address, "at": resumed.resumed_at})
        [view] = await self.deliverability(GetMailboxDeliverability(
            workspace_id=command.workspace_id, addresses=[address]))
        return view

    async def deliverability(self, query: GetMailboxDeliverability
                             ) -> list[MailboxDeliverabilityView]:
        now = self.runtime.clock.now()
        views = []
        async with self.runtime.engine.connect() as conn:
            for address in dict.fromkeys(a.lower() for a in query.addresses):
                state = (await conn.execute(_STATE, {"address": address})).first()
                since = _window_start(now, self.policy.window, state)
                last = (await conn.execute(_LAST_REJECTIONS, {"address": address, "since": since,
                                                              "until": now})).first()
                views.append(MailboxDeliverabilityView(
                    address=address, alert=last.n > 0, rejections=last.n,
                    window_minutes=_minutes(self.policy.window),
                    pause_after=self.policy.pause_after, last_rejection=last.detail,
                    last_rejection_at=last.at, paused=bool(state and state.paused),
                    paused_at=state.paused_at if state and state.paused else None,
                    paused_reason=state.reason if state and state.paused else None))
        return views

    async def _known(self, conn, workspace_id: uuid.UUID, address: str) -> None:
        """A workspace resumes only the mailboxes its own sequences send from, or its own
        connected mailboxes."""
        known = (await conn.execute(
            text("SELECT 1 FROM mailer.sequences WHERE workspace_id = :ws"
                 " AND lower(sender_email) = :address"
                 " UNION ALL SELECT 1 FROM mailer.mailboxes WHERE workspace_id = :ws"
                 " AND lower(address) = :address LIMIT 1"),
            {"ws": workspace_id, "address": address})).first()
        if known is None:
            raise Rejected(404, f"no sequence of this workspace sends from {address}", "address")

    async def _locked_state(self, conn, address: str):
        """The mailbox's row, locked: two replicas counting at once pause it once."""
        await conn.execute(text("INSERT INTO mailer.mailbox_states (address, paused)"
                                " VALUES (:address, false) ON CONFLICT DO NOTHING"),
                           {"address": address})
        return (await conn.execute(text(f"{_STATE.text} FOR UPDATE"),
                                   {"address": address})).first()

    async def _rejections(self, conn, address: str, at: datetime, state) -> int:
        since = _window_start(at, self.policy.window, state)
        return (await conn.execute(_LAST_REJECTIONS, {"address": address, "since": since,
                                                      "until": at})).first().n


def _window_start(at: datetime, window: timedelta, state) -> datetime:
    start = at - window
    if state is not None and state.resumed_at is not None and state.resumed_at > start:
        return state.resumed_at
    return start


def _minutes(window: timedelta) -> int:
    return int(window.total_seconds() // 60)


# the mailbox an enrollment's emails go from: the one of its sequence's pool it was given,
# else its sequence's sender (the sequence named by the enrollment's first StepDue)
_SENDER_OF = text(
    "SELECT coalesce(m.address, s.sender_email) AS sender_email FROM eventlog.events e"
    " JOIN mailer.sequences s ON s.sequence_id = CAST(e.data->>'sequence_id' AS uuid)"
    " LEFT JOIN mailer.enrollment_mailboxes m ON m.enrollment_id = :enrollment"
    " WHERE e.stream_id = :stream AND e.type = 'StepDue' ORDER BY e.version LIMIT 1")
_REJECTED = text(
    "INSERT INTO mailer.sender_rejections (event_id, address, bounce_reason, detail, at)"
    " VALUES (:id, :address, :reason, :detail, :at) ON CONFLICT DO NOTHING")
_STATE = text("SELECT * FROM mailer.mailbox_states WHERE address = :address")
_LAST_REJECTIONS = text(
    "SELECT count(*) AS n, (array_agg(detail ORDER BY at DESC))[1] AS detail, max(at) AS at"
    " FROM mailer.sender_rejections"
    " WHERE address = :address AND at > :since AND at <= :until")
