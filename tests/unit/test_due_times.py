"""Due-time rules (sequences/calendars.py, as services/scheduler/domain.py plans with them),
including DST transitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from contracts.values import SendPolicy, Step
from sequences.calendars import calendar_for, local_instant
from services.scheduler import domain

AT_0930 = SendPolicy(mode="send_time", send_time="09:30")
ASAP = SendPolicy(mode="as_soon_as_due")
SEOUL, NEW_YORK = ZoneInfo("Asia/Seoul"), ZoneInfo("America/New_York")


def due_at(anchor: datetime, wait_days: int, zone: str, policy: SendPolicy) -> datetime:
    step = Step(channel="call", body="b", wait_days=wait_days)
    return domain.plan(anchor, step, calendar_for(zone, policy)).at


def local(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def test_enrolled_monday_afternoon_with_wait_0_goes_out_tuesday_at_the_send_time():
    monday_3pm = datetime(2026, 11, 30, 15, 0, tzinfo=SEOUL)
    assert local(due_at(monday_3pm, 0, "Asia/Seoul", AT_0930), SEOUL) == datetime(2026, 12, 1, 9, 30)


def test_enrolled_before_the_send_time_goes_out_the_same_day():
    monday_8am = datetime(2026, 11, 30, 8, 0, tzinfo=SEOUL)
    assert local(due_at(monday_8am, 0, "Asia/Seoul", AT_0930), SEOUL) == datetime(2026, 11, 30, 9, 30)


def test_waits_are_calendar_days_and_the_send_time_is_kept_across_dst():
    saturday = datetime(2027, 3, 13, 9, 0, tzinfo=NEW_YORK)  # DST starts Sunday 14 March 2027
    due = due_at(saturday, 3, "America/New_York", AT_0930)
    assert local(due, NEW_YORK) == datetime(2027, 3, 16, 9, 30)
    assert due == datetime(2027, 3, 16, 13, 30, tzinfo=UTC)  # EDT, UTC-4


def test_as_soon_as_due_is_the_same_local_time_days_later():
    anchor = datetime(2027, 3, 13, 10, 0, tzinfo=NEW_YORK)
    assert local(due_at(anchor, 2, "America/New_York", ASAP), NEW_YORK) == datetime(2027, 3, 15, 10)
    assert due_at(anchor, 0, "America/New_York", ASAP) == anchor


def test_a_skipped_local_time_moves_to_the_first_valid_instant():
    assert local_instant(datetime(2027, 3, 14, 2, 30), NEW_YORK) == datetime(2027, 3, 14, 7, 0, tzinfo=UTC)
    policy = SendPolicy(mode="send_time", send_time="02:30")
    saturday = datetime(2027, 3, 13, 12, 0, tzinfo=NEW_YORK)
    assert local(due_at(saturday, 0, "America/New_York", policy), NEW_YORK) == datetime(2027, 3, 14, 3, 0)


def test_a_repeated_local_time_means_its_first_occurrence():
    first = local_instant(datetime(2027, 11, 7, 1, 30), NEW_YORK)
    assert first == datetime(2027, 11, 7, 5, 30, tzinfo=UTC)  # 01:30 EDT, not 01:30 EST


@pytest.mark.parametrize("zone", ["Asia/Seoul", "Europe/Berlin", "America/New_York",
                                  "Australia/Lord_Howe", "America/Sao_Paulo", "Pacific/Chatham"])
@pytest.mark.parametrize("send_time", ["00:30", "02:30", "09:30", "23:59"])
def test_every_day_of_2026_and_2027_gets_the_send_time_exactly_once(zone, send_time):
    tz, policy = ZoneInfo(zone), SendPolicy(mode="send_time", send_time=send_time)
    anchor = datetime(2026, 1, 1, 12, 0, tzinfo=tz)
    seen = set()
    for day in range(730):
        start = anchor + timedelta(days=day)
        due = due_at(start, 0, zone, policy)
        assert due >= start
        assert due - start < timedelta(days=1, hours=2)
        wall = local(due, tz)
        seen.add(wall.date())
        # the wall time is the send time, or the end of a DST gap that swallowed it
        assert wall.strftime("%H:%M") == send_time or local_instant(
            datetime.combine(wall.date(), datetime.strptime(send_time, "%H:%M").time()), tz
        ) == due
    assert len(seen) == 730


def test_a_step_sent_seconds_after_the_send_time_does_not_push_the_next_one_a_day():
    sent = datetime(2027, 3, 13, 9, 30, 6, tzinfo=NEW_YORK)
    # inside the minute of the send time: it goes at its due moment, 09:30:06
    assert local(due_at(sent, 1, "America/New_York", AT_0930), NEW_YORK) == datetime(
        2027, 3, 14, 9, 30, 6)
    late = datetime(2027, 3, 13, 9, 31, 0, tzinfo=NEW_YORK)
    assert local(due_at(late, 1, "America/New_York", AT_0930), NEW_YORK) == datetime(2027, 3, 15, 9, 30)


def test_the_schedule_preview_chains_the_steps():
    steps = [Step(channel="email", subject="s", body="b", wait_days=w) for w in (0, 1, 3)]
    start = datetime(2027, 3, 12, 10, 0, tzinfo=NEW_YORK)
    calendar = calendar_for("America/New_York", AT_0930)
    moments = [local(p.at, NEW_YORK) for p in domain.preview(start, steps, calendar)]
    assert moments == [datetime(2027, 3, 13, 9, 30), datetime(2027, 3, 14, 9, 30),
                       datetime(2027, 3, 17, 9, 30)]


def standing(**changes):
    """Where an enrollment stands, as the scheduler reads it (services/scheduler/handlers.py)."""
    return SimpleNamespace(**{
        "completed": [], "anchor_at": datetime(2026, 11, 30, 15, 0, tzinfo=SEOUL), "active": True,
        "contact_timezone": None, "paused_until": None, "timezone": "Asia/Seoul",
        "send_policy": AT_0930.model_dump(mode="json"), "holidays": None, "zone_mode": "sequence",
        "workspace_holidays": None, "skip_dates": [], "state": "live", "planned_at": None,
        **changes})


STEPS = [Step(channel="email", subject="s", body="b", wait_days=0),
         Step(channel="call", body="b", wait_days=2)]


def test_the_next_step_is_the_first_not_completed_one_planned_from_the_anchor():
    first = domain.next_planned(standing(), STEPS)
    assert (first.step_index, first.held, first.zone) == (0, False, "Asia/Seoul")
    assert local(first.planned.at, SEOUL) == datetime(2026, 12, 1, 9, 30)
    second = domain.next_planned(standing(completed=[STEPS[0].step_id]), STEPS)
    # two days after the anchor (15:00) is past 09:30: the day after
    assert second.step_index == 1 and local(second.planned.at, SEOUL) == datetime(2026, 12, 3, 9, 30)
    assert domain.next_planned(standing(completed=[s.step_id for s in STEPS]), STEPS) is None
    assert domain.next_planned(standing(active=False), STEPS) is None


def test_a_paused_sequence_holds_the_plan_and_a_pause_or_resume_moves_it_later_only():
    assert domain.next_planned(standing(state="paused"), STEPS).held
    back = datetime(2026, 12, 3, 0, 0, tzinfo=SEOUL)
    paused = domain.next_planned(standing(paused_until=back), STEPS)
    assert local(paused.planned.at, SEOUL) == datetime(2026, 12, 3, 9, 30)
    resumed = domain.next_planned(standing(), STEPS, resumed_at=back)
    assert resumed.planned.at == paused.planned.at
    early = datetime(2026, 11, 30, 16, 0, tzinfo=SEOUL)  # before the plan: changes nothing
    assert domain.next_planned(standing(), STEPS, resumed_at=early).planned.at \
        == domain.next_planned(standing(), STEPS).planned.at


def test_an_edit_after_the_planned_moment_plans_from_the_edit_not_at_once_in_the_contacts_zone():
    edited = datetime(2026, 12, 1, 12, 0, tzinfo=SEOUL)  # after the 09:30 it was planned for
    planned = domain.next_planned(
        standing(zone_mode="contact", contact_timezone="Europe/Paris", planned_at=edited), STEPS,
        edited_at=edited)
    assert planned.zone == "Europe/Paris" and planned.planned.at >= edited
