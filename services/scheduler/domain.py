"""When a step goes out: its wait counted from the anchor, then moved to the calendar's next
sending moment. Pure: every computation is `sequences.calendars` (the one place due times are
computed; the rules are in its docstring and the README's "Due times").

1. The wait counts from the anchor: enrollment for the first step, completion of the previous
   step otherwise, in calendar days (the anchor's local date and time, that many days later)
   or business days (days the window sends on that are no holiday or skip date).
2. The step goes at the first moment at or after that due moment the calendar sends at: at once
   inside the window ("as soon as due" is always inside), else when it next opens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from contracts.values import HolidayCalendar, ScheduleMove, SendPolicy, SkipDate, Step, next_step
from sequences.calendars import SendCalendar, add_days, calendar_for, next_send


@dataclass(frozen=True)
class Planned:
    due: datetime  # the wait done
    at: datetime  # when it goes out
    moved: list[ScheduleMove]  # why `at` is later than `due`


def plan(anchor: datetime, step: Step, calendar: SendCalendar) -> Planned:
    due = add_days(anchor, step.wait_days, step.wait_unit, calendar)
    at, moved = next_send(due, calendar)
    return Planned(due, at, moved)


def not_before(moment: datetime, calendar: SendCalendar) -> Planned:
    """A step whose planned moment passed (a pause, an edit): the first moment from `moment`."""
    at, moved = next_send(moment, calendar)
    return Planned(moment, at, moved)


def preview(start: datetime, steps, calendar: SendCalendar) -> list[Planned]:
    """When each step would go out if each completes the moment it goes out."""
    planned, anchor = [], start
    for step in steps:
        planned.append(plan(anchor, step, calendar))
        anchor = planned[-1].at
    return planned


@dataclass(frozen=True)
class NextStep:
    """An enrollment's next step as planned: what `scheduler.due_steps` keeps of it."""

    step: Step
    step_index: int
    planned: Planned
    zone: str
    held: bool  # the sequence is paused or archived: planned, but it does not fire


def next_planned(where, steps: list[Step], resumed_at: datetime | None = None,
                 edited_at: datetime | None = None) -> NextStep | None:
    """Where an enrollment stands (its row, its sequence's and its workspace's calendar, as the
    scheduler keeps them) to its next step, or None when nothing is left to plan. `resumed_at`
    (a resume): a moment that passed is planned from there. `edited_at` (new rules): a moment
    that passed is planned from when the step was planned to go, so an edit never makes a step
    fire at once."""
    step = next_step(steps, set(where.completed)) if where.active else None
    if step is None:
        return None
    calendar = calendar_of(where)
    planned = plan(where.anchor_at, step, calendar)
    if resumed_at is not None and planned.at < resumed_at:
        planned = not_before(resumed_at, calendar)
    if where.paused_until is not None and planned.at < where.paused_until:
        planned = not_before(where.paused_until, calendar)  # out of office
    if edited_at is not None and planned.at < edited_at:
        planned = not_before(max(where.planned_at or edited_at, edited_at), calendar)
    return NextStep(step, steps.index(step), planned,
                    zone_of(where.timezone, where.zone_mode, where.contact_timezone),
                    held=where.state != "live")


def calendar_of(where) -> SendCalendar:
    """The calendar an enrollment's steps go out by (see `next_planned` for `where`)."""
    zone = zone_of(where.timezone, where.zone_mode, where.contact_timezone)
    return sequence_calendar(zone, where.send_policy, where.holidays, where.workspace_holidays,
                             where.skip_dates)


def zone_of(sequence_zone: str, zone_mode: str, contact_zone: str | None) -> str:
    """Whose local time: the contact's in zone mode "contact" (when they have one), else the
    sequence's."""
    return contact_zone if zone_mode == "contact" and contact_zone else sequence_zone


def sequence_calendar(zone: str, policy, holidays, workspace_holidays, skip_dates) -> SendCalendar:
    """The calendar of a sequence's settings as stored (JSON values or models), in `zone`; the
    workspace's default holidays apply when the sequence's `holidays` is "workspace"."""
    return _calendar(zone, _json(policy), _json(holidays), _json(workspace_holidays),
                     _json(skip_dates or []))


@lru_cache(maxsize=8192)
def _calendar(zone: str, policy: str, holidays: str, workspace_holidays: str,
              skip_dates: str) -> SendCalendar:
    """Built once per distinct settings: planning 100,000 enrollments builds a few calendars."""
    choice = json.loads(holidays) if holidays != "null" else "workspace"
    if choice == "workspace":
        choice = json.loads(workspace_holidays)
    calendar = HolidayCalendar.model_validate(choice) if isinstance(choice, dict) else None
    return calendar_for(zone, SendPolicy.model_validate_json(policy), calendar,
                        [SkipDate.model_validate(s) for s in json.loads(skip_dates)])


def _json(value) -> str:
    if hasattr(value, "model_dump_json"):
        return value.model_dump_json()
    if isinstance(value, list):
        return json.dumps([v.model_dump(mode="json") if hasattr(v, "model_dump") else v
                           for v in value], sort_keys=True)
    return json.dumps(value, sort_keys=True)
