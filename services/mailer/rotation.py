"""Which mailbox of a sequence's pool a new enrollment gets, and how much a mailbox may send
today (its daily cap after the warm-up ramp): pure functions, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from contracts.values import MailboxLimits


def cap_on(limits: MailboxLimits, connected_on: date, day: date) -> int | None:
    """The most the mailbox may send on `day`: the warm-up ramp (`warmup_start` on the day it
    was connected, `warmup_step` more each day after) up to the daily cap. None: no limit."""
    if limits.warmup_start is None:
        return limits.daily_cap
    ramp = limits.warmup_start + limits.warmup_step * max(0, (day - connected_on).days)
    return ramp if limits.daily_cap is None else min(ramp, limits.daily_cap)


@dataclass
class Candidate:
    """A pool mailbox with what it may still take today."""

    address: str
    cap: int | None  # today's cap (None: unlimited)
    used: int  # sent today, and given to new enrollments today that have not sent yet

    @property
    def room(self) -> float:
        return float("inf") if self.cap is None else self.cap - self.used


def choose(candidates: list[Candidate]) -> Candidate | None:
    """The mailbox with the most room today (on a tie, the less used, then the larger cap, then
    the pool's order: unlimited mailboxes take turns);
    the caller counts the enrollment on it (`used += 1`). When every one is full the choice
    still spreads the overflow, and those emails wait for the mailbox's next day."""
    if not candidates:
        return None
    return max(enumerate(candidates),
               key=lambda ic: (ic[1].room, -ic[1].used, ic[1].cap or 0, -ic[0]))[1]
