"""Sending calendars (issue 14): what windows, holidays and per-contact zones cost.

The scheduler fires due steps from `scheduler.due_steps` by `due_at` alone: the calendar is
applied when a step is planned (`services/scheduler/domain.plan`), never when it fires, so the
firing benchmarks (`--only scheduler`: 100,000 due within a minute, 1,000 due per second) run
the same code with calendars on or off. What calendars add is planning time, measured here in
the same run, on vs off:

* planning N next steps (`domain.plan` with the calendar lookup the scheduler does per
  enrollment): off = "as soon as due" in the sequence's zone, no holidays; on = a Mon-Fri
  09:00-11:30 + 14:00-17:00 window, a business-day wait, KR holidays, a workspace skip date,
  each contact in one of 24 zones. Anchors spread over 2026-2028.
* the schedule preview (`domain.preview` of a 5-step sequence, the scheduler's answer to
  `GET …/schedule` once it has replayed the sequence's events): p95 per answer, target < 20 ms,
  each with a new start moment and contact zone.

    python -m bench --only calendars [--quick]
"""

from __future__ import annotations

import random
import time
from datetime import UTC, date, datetime, timedelta

from bench import common
from bench.common import Result
from contracts.values import SendPolicy, SkipDate, Step
from services.scheduler import domain

ZONES = ["Asia/Seoul", "America/New_York", "Europe/Berlin", "America/Los_Angeles", "Asia/Tokyo",
         "Europe/London", "Australia/Sydney", "America/Sao_Paulo", "Asia/Kolkata", "Africa/Cairo",
         "Pacific/Auckland", "America/Chicago", "Europe/Paris", "Asia/Singapore", "Asia/Dubai",
         "America/Denver", "Europe/Moscow", "Asia/Shanghai", "America/Mexico_City",
         "Australia/Lord_Howe", "Pacific/Chatham", "Asia/Kathmandu", "America/St_Johns", "UTC"]
WINDOW = SendPolicy(mode="window", window={
    "days": ["mon", "tue", "wed", "thu", "fri"],
    "blocks": [{"start": "09:00", "end": "11:30"}, {"start": "14:00", "end": "17:00"}]})
ASAP = SendPolicy(mode="as_soon_as_due")
PREVIEW_P95_UNDER_MS = 20.0


def _anchors(n: int, seed: int = 14) -> list[datetime]:
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [start + timedelta(seconds=rng.randrange(3 * 365 * 86400)) for _ in range(n)]


def _plan_all(anchors, step: Step, policy: SendPolicy, holidays, skips, per_contact: bool) -> float:
    began = time.perf_counter()
    for i, anchor in enumerate(anchors):
        zone = domain.zone_of("Asia/Seoul", "contact" if per_contact else "sequence",
                              ZONES[i % len(ZONES)])
        calendar = domain.sequence_calendar(zone, policy, holidays, None, skips)
        domain.plan(anchor, step, calendar)
    return time.perf_counter() - began


def _previews(n: int) -> list[float]:
    steps = [Step(channel="email", subject="s", body="b", wait_days=w, wait_unit=u)
             for w, u in ((0, "days"), (2, "business_days"), (3, "days"), (5, "business_days"),
                          (7, "days"))]
    skips = [SkipDate(date=date(2027, 5, 14), name="Offsite")]
    took = []
    for i, anchor in enumerate(_anchors(n, seed=15)):
        began = time.perf_counter()
        calendar = domain.sequence_calendar(ZONES[i % len(ZONES)], WINDOW, {"country": "KR"},
                                            None, skips)
        domain.preview(anchor, steps, calendar)
        took.append((time.perf_counter() - began) * 1000)
    return took


async def run(quick: bool) -> list[Result]:
    n = 10_000 if quick else 100_000
    anchors = _anchors(n)
    skips = [SkipDate(date=date(2027, 5, 14), name="Offsite")]
    plain = Step(channel="email", subject="s", body="b", wait_days=2)
    business = Step(channel="email", subject="s", body="b", wait_days=2, wait_unit="business_days")
    _plan_all(anchors[:2000], business, WINDOW, {"country": "KR"}, skips, True)  # holiday sets
    common.progress(f"calendars: planning {n:,} next steps, calendars off then on")
    off = _plan_all(anchors, plain, ASAP, "none", [], False)
    on = _plan_all(anchors, business, WINDOW, {"country": "KR"}, skips, True)
    previews = sorted(_previews(500 if quick else 2000))
    p95 = previews[int(len(previews) * 0.95)]
    return [
        Result("planning: µs per next step, calendars on (window, KR holidays, skip date,"
               " per-contact zones)", on / n * 1e6, "µs", off / n * 1e6,
               "calendars off", on / off, None, None,
               details={"steps": n, "on_s": round(on, 3), "off_s": round(off, 3)}),
        Result("schedule preview (5 steps, window, KR holidays, 24 zones): p95", p95, "ms",
               target=f"< {PREVIEW_P95_UNDER_MS:g} ms", passed=p95 < PREVIEW_P95_UNDER_MS,
               details={"answers": len(previews), "p50_ms": round(previews[len(previews) // 2], 3),
                        "max_ms": round(previews[-1], 3)}),
    ]
