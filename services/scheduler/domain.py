"""When a step is due: pure functions of the anchor moment, the wait and the sequence's policy.

The rule (also in the README):
1. The wait counts from the anchor: enrollment for the first step, completion of the previous
   step otherwise. `wait_days` are calendar days in the sequence's timezone: the due moment is
   the anchor's local date and time, `wait_days` days later.
2. "As soon as due": the step goes out at that due moment.
3. With a send time (say 09:30): the step goes out at 09:30 local on the due moment's date if
   that instant is at or after the due moment, else at 09:30 on the next day. So enrolled Monday
   15:00 with wait 0 -> Tuesday 09:30; enrolled Monday 08:00 with wait 0 -> Monday 09:30. The
   comparison is to the minute: a step sent at 09:30:04 with a 1-day wait before the next one
   makes the next go out at 09:30 the next day, not the day after.
4. Local times are read in the sequence's timezone with zoneinfo: 09:30 stays 09:30 across DST
   changes. A local time inside a skipped hour (spring forward) moves to the first valid instant
   after the gap (02:30 -> 03:00); a local time in a repeated hour (fall back) means its first
   occurrence, so it fires once.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from contracts.values import SendPolicy


def due_at(anchor: datetime, wait_days: int, timezone: str, policy: SendPolicy) -> datetime:
    """The UTC instant a step is due, per the rule above."""
    tz = ZoneInfo(timezone)
    due_wall = anchor.astimezone(tz).replace(tzinfo=None) + timedelta(days=wait_days)
    due = max(local_instant(due_wall, tz), anchor) if wait_days == 0 else local_instant(due_wall, tz)
    if policy.mode == "as_soon_as_due":
        return due
    send = time.fromisoformat(policy.send_time)
    candidate = local_instant(datetime.combine(due_wall.date(), send), tz)
    if candidate < due.replace(second=0, microsecond=0):
        candidate = local_instant(datetime.combine(due_wall.date() + timedelta(days=1), send), tz)
    return candidate


def local_instant(wall: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of a naive local wall time: first occurrence when repeated, first valid
    instant after the gap when skipped."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if _wall(first, tz) == wall:
        return first
    # Inside a gap. The fold=1 reading lands before the gap, the fold=0 reading after it; the
    # transition is the earliest whole second whose local time is at or past `wall`.
    low, high = sorted(int(wall.replace(tzinfo=tz, fold=f).timestamp()) for f in (0, 1))
    while high - low > 1:
        middle = (low + high) // 2
        if _wall(datetime.fromtimestamp(middle, UTC), tz) >= wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _wall(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def preview(start: datetime, steps, timezone: str, policy: SendPolicy) -> list[tuple[int, datetime]]:
    """When each step would go out if each completes the moment it goes out: (index, UTC)."""
    moments, anchor = [], start
    for index, step in enumerate(steps):
        anchor = due_at(anchor, step.wait_days, timezone, policy)
        moments.append((index, anchor))
    return moments
