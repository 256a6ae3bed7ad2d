"""When mail may go out: the one place that computes send moments (the scheduler plans with it,
the schedule preview shows it, the enrollment service checks a calendar has sending days).

Pure functions of a `SendCalendar` (zone, send window, holidays, skip dates):

* `next_send(due, calendar)`: the earliest moment at or after `due` inside the window, on a
  sending day that is no holiday or skip date, and why it moved (`ScheduleMove`s);
* `add_days(anchor, n, unit, calendar)`: the due moment of a wait of `n` calendar or business
  days (the anchor's local time of day, `n` days later; business days skip what `next_send`
  skips);
* `local_instant(wall, zone)`: a local wall time as an instant (DST rules below).

Rules (the README's "Due times" says the same):
* Local times are compared to the minute: a due moment of 09:30:04 is inside a window opening at
  09:30, and goes at that moment.
* A block's times are read on each local date: a time inside a skipped DST hour means the first
  valid instant after the gap (a block wholly inside the gap opens for one minute there); a
  repeated hour counts once, its first occurrence (the second pass of the clock sends nothing).
* A block includes its start and excludes its end (09:00-17:00 sends up to 16:59).
* "As soon as due" is a window of every day, all day; a send time is a window of one minute.

Holiday sets come from the maintained `holidays` package, built once per (country,
subdivision, year) per process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from contracts.values import (
    WEEKDAYS,
    HolidayCalendar,
    ScheduleMove,
    SendPolicy,
    SkipDate,
)

MINUTE = timedelta(minutes=1)
HORIZON_DAYS = 366  # a calendar with no sending day this far ahead is refused when saved
_ALL_DAY = ((0, 24 * 60),)  # minutes of the day: [start, end)


class NoSendingDay(ValueError):
    """The window, holidays and skip dates leave no sending day within the horizon."""


@dataclass(frozen=True)
class SendCalendar:
    zone: ZoneInfo
    days: frozenset[int] = frozenset(range(7))  # date.weekday(): 0 is Monday
    blocks: tuple[tuple[int, int], ...] = _ALL_DAY  # [start, end) minutes of the day, in order
    holidays: HolidayCalendar | None = None
    skip_dates: dict[date, str] = field(default_factory=dict)

    def closed(self, day: date) -> ScheduleMove | None:
        """Why nothing goes out on this local date, or None when it is a sending day."""
        if day.weekday() not in self.days:
            return ScheduleMove(kind="not_sending_day", date=day)
        if (name := self.skip_dates.get(day)) is not None:
            return ScheduleMove(kind="skip_date", date=day, name=name)
        if self.holidays is not None and (name := holiday_names(self.holidays, day.year).get(day)):
            return ScheduleMove(kind="holiday", date=day, name=name)
        return None


def calendar_for(zone: str, policy: SendPolicy, holidays: HolidayCalendar | None = None,
                 skip_dates: list[SkipDate] = ()) -> SendCalendar:
    """The calendar of a sequence's settings, read in `zone` (the sequence's or the contact's)."""
    days, blocks = frozenset(range(7)), _ALL_DAY
    if policy.mode == "send_time":
        start = _minutes(policy.send_time)
        blocks = ((start, start + 1),)
    elif policy.mode == "window":
        days = frozenset(WEEKDAYS.index(d) for d in policy.window.days)
        blocks = tuple((_minutes(b.start), _minutes(b.end)) for b in policy.window.blocks)
    skips = {s.date: s.name for s in skip_dates}
    return SendCalendar(ZoneInfo(zone), days, blocks, holidays, skips)


def _minutes(value: str) -> int:
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


@lru_cache(maxsize=4096)
def holiday_names(calendar: HolidayCalendar, year: int) -> dict[date, str]:
    """The public holidays of one year of a calendar, in its country's own language (설날 for
    KR): built once per process."""
    import holidays

    language = holidays.country_holidays(calendar.country).default_language
    found = holidays.country_holidays(calendar.country, subdiv=calendar.subdivision, years=year,
                                      language=language)
    return {day: name for day, name in sorted(found.items())}


# --- the two functions -------------------------------------------------------------------------


def next_send(due: datetime, calendar: SendCalendar) -> tuple[datetime, list[ScheduleMove]]:
    """The earliest moment at or after `due` the calendar sends at, and why it is later."""
    tz = calendar.zone
    floor = due.astimezone(UTC).replace(second=0, microsecond=0)
    first_day = day = floor.astimezone(tz).date()
    moved: list[ScheduleMove] = []
    for _ in range(HORIZON_DAYS + 2):
        reason = calendar.closed(day)
        if reason is None:
            found = _in_day(floor, day, calendar)
            if found is not None:
                if found > floor and day == first_day:
                    moved.append(_within_day(floor, found, day, calendar))
                return (due if found == floor else found), moved
            if day == first_day:
                moved.append(_past_blocks(floor, day, calendar))
        elif len(moved) < 20:  # enough to explain; a long run of skipped days is rare
            moved.append(reason)
        day += timedelta(days=1)
    raise NoSendingDay(f"no sending day within {HORIZON_DAYS} days of {due.isoformat()}")


def _in_day(floor: datetime, day: date, calendar: SendCalendar) -> datetime | None:
    """The first minute at or after `floor` in one of the day's blocks (first pass of a repeated
    hour only), or None."""
    tz = calendar.zone
    for start, end in calendar.blocks:
        opens = local_instant(_at(day, start), tz)
        closes = local_instant(_at(day, end), tz)
        if closes <= opens:  # wholly inside a DST gap: open for a minute after it
            closes = opens + MINUTE
        candidate = max(floor, opens)
        while candidate < closes and candidate.astimezone(tz).fold:
            candidate += MINUTE  # the clock's second pass over a repeated hour counts no more
        if candidate < closes:
            return candidate
    return None


def _within_day(floor: datetime, found: datetime, day: date, calendar: SendCalendar) -> ScheduleMove:
    """Why a moment later on the due moment's own day: past a block, or before the window
    opens."""
    wall = floor.astimezone(calendar.zone)
    if any(end <= wall.hour * 60 + wall.minute for _, end in calendar.blocks):
        return _past_blocks(floor, day, calendar)
    return ScheduleMove(kind="before_window", date=day, at=_hhmm(found, calendar.zone))


def _past_blocks(floor: datetime, day: date, calendar: SendCalendar) -> ScheduleMove:
    """Due after a block closed (`at`: its end; a send time's own minute for a send time)."""
    wall = floor.astimezone(calendar.zone)
    minute = wall.hour * 60 + wall.minute
    start, end = ([b for b in calendar.blocks if b[1] <= minute] or calendar.blocks[-1:])[-1]
    return ScheduleMove(kind="after_window", date=day, at=_clock(start if end - start == 1 else end))


def add_days(anchor: datetime, days: int, unit: str, calendar: SendCalendar) -> datetime:
    """The due moment of a wait: the anchor's local date and time, `days` calendar days later, or
    `days` business days later (days `next_send` would skip do not count). A wait of 0 is the
    anchor itself."""
    if days == 0:
        return anchor
    tz = calendar.zone
    wall = anchor.astimezone(tz).replace(tzinfo=None)
    if unit == "business_days":
        day, counted = wall.date(), 0
        for _ in range(days * 7 + HORIZON_DAYS * 2):
            day += timedelta(days=1)
            counted += calendar.closed(day) is None
            if counted == days:
                break
        else:
            raise NoSendingDay(f"not {days} business days within reach of {anchor.isoformat()}")
        wall = datetime.combine(day, wall.time())
    else:
        wall += timedelta(days=days)
    return local_instant(wall, tz)


def first_sending_day(calendar: SendCalendar, start: date) -> date:
    """The first local date from `start` the calendar sends on (NoSendingDay past the horizon)."""
    for offset in range(HORIZON_DAYS + 1):
        day = start + timedelta(days=offset)
        if calendar.closed(day) is None:
            return day
    raise NoSendingDay(f"no sending day within {HORIZON_DAYS} days of {start.isoformat()}")


# --- local wall times --------------------------------------------------------------------------


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


def _at(day: date, minute: int) -> datetime:
    """The wall time `minute` minutes after the day's midnight (1440: the next midnight)."""
    return datetime.combine(day, time()) + timedelta(minutes=minute)


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _hhmm(instant: datetime, tz: ZoneInfo) -> str:
    return instant.astimezone(tz).strftime("%H:%M")
