"""The connected mailboxes a run of due steps needs, and the rotation over a sequence's pool:
loaded in one query per run, with each pool mailbox's room today (sends today plus the new
enrollments given to it today that have not sent yet), counted on as the run assigns more."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import text

from sequences import mailboxes
from sequences.encryption import SecretBox
from sequences.mailboxes import ConnectedMailbox
from services.mailer.adapters import Mailbox, smtp_settings_of
from services.mailer.rotation import Candidate, cap_on, choose

_USED = text(
    """
    SELECT a.address, a.day,
           coalesce((SELECT sent FROM mailer.mailbox_usage u
                     WHERE u.address = a.address AND u.day = a.day), 0)
         + (SELECT count(*) FROM mailer.enrollment_mailboxes e
            WHERE e.address = a.address AND e.day = a.day AND e.awaiting) AS used
    FROM unnest(CAST(:addresses AS text[]), CAST(:days AS date[])) AS a(address, day)
    """
)


@dataclass
class Pools:
    by_address: dict[tuple, ConnectedMailbox]
    used: dict[tuple[str, date], int]
    now: datetime
    _counted: dict = field(default_factory=dict)

    @classmethod
    async def of(cls, conn, box: SecretBox, situations: list, now: datetime) -> Pools:
        wanted = {(s.workspace_id, a) for s in situations
                  for a in [*s.mailbox_pool, s.sender_email.lower()]}
        if not wanted:
            return cls({}, {}, now)
        found = await mailboxes.load(
            conn, box, "(workspace_id, address) IN (SELECT * FROM unnest(CAST(:ws AS uuid[]),"
            " CAST(:addresses AS text[])))",
            {"ws": [w for w, _ in wanted], "addresses": [a for _, a in wanted]})
        by_address = {(m.workspace_id, m.address): m for m in found}
        days = {(a, now.astimezone(ZoneInfo(s.timezone)).date())
                for s in situations if s.mailbox_pool for a in s.mailbox_pool}
        used = {}
        if days:
            rows = await conn.execute(_USED, {"addresses": [a for a, _ in days],
                                              "days": [d for _, d in days]})
            used = {(row.address, row.day): row.used for row in rows}
        return cls(by_address, used, now)

    def connected(self, workspace_id, address: str) -> ConnectedMailbox | None:
        return self.by_address.get((workspace_id, address.lower()))

    def today(self, found) -> date:
        return self.now.astimezone(ZoneInfo(found.timezone)).date()

    def cap(self, mailbox: ConnectedMailbox, found) -> int | None:
        return cap_on(mailbox.limits, mailbox.connected_at.date(), self.today(found))

    def choose(self, found) -> str | None:
        """A new enrollment's mailbox: of the pool's connected, healthy ones, the one with the
        most room today; counted on it at once, so the rest of the run sees it."""
        day = self.today(found)
        candidates = [Candidate(m.address, self.cap(m, found), self.used.get((m.address, day), 0))
                      for a in found.mailbox_pool
                      if (m := self.connected(found.workspace_id, a)) is not None and m.healthy]
        chosen = choose(candidates)
        if chosen is None:
            return None
        self.used[(chosen.address, day)] = chosen.used + 1
        return chosen.address

    def unhealthy(self, found) -> ConnectedMailbox | None:
        """The first of the pool's connected mailboxes that cannot send (`choose` passes them
        over), when none of them can: the one a new enrollment waits for."""
        connected = [m for a in found.mailbox_pool
                     if (m := self.connected(found.workspace_id, a)) is not None]
        if any(m.healthy for m in connected):
            return None
        return next(iter(connected), None)


def mailbox_of(connected: ConnectedMailbox, cap_today: int | None) -> Mailbox:
    limits = connected.limits
    return Mailbox(connected.address, smtp_settings_of(connected), daily_cap=cap_today,
                   min_gap_seconds=float(limits.min_gap_seconds), hourly_cap=limits.hourly_cap,
                   jitter_seconds=float(limits.jitter_seconds),
                   display_name=connected.display_name, connected=connected)


def gap_with_jitter(mailbox: Mailbox) -> float:
    """The gap before this send: the minimum, plus a random part of the jitter (so sends of a
    mailbox do not tick like a machine's)."""
    return mailbox.min_gap_seconds + random.uniform(0, mailbox.jitter_seconds)
