"""The schedule preview over HTTP (issue 14: "the schedule preview p95 under 20 ms"):
`GET /v1/sequences/{id}/schedule` on the dev stack (gateway → NATS → scheduler, every service
its own process), with calendars on vs off in the same run.

* on: 5 email steps (waits of 0, 2 business days, 3 days, 5 business days, 7 days), a Mon-Fri
  09:00-11:30 + 14:00-17:00 window, KR holidays, a workspace skip date, zone mode "contact",
  asked for a contact in America/Los_Angeles;
* off: the same steps in calendar days, "as soon as due", no holidays, the sequence's zone.

Each request has another start moment (2026-2028), so no answer repeats. Measured: the
client's round trip and the gateway's own `Server-Timing`, p50/p95 over N requests after a
warm-up.

    python -m bench --only schedule_preview [--quick]
"""

from __future__ import annotations

import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import common
from bench.common import Result
from bench.service_common import percentile
from sequences.devstack.stack import Stack, StackConfig
from services.gateway.timing import server_timing

TARGET_MS = 20.0
WARMUP = 20
WAITS = ((0, "days"), (2, "business_days"), (3, "days"), (5, "business_days"), (7, "days"))
WINDOW = {"mode": "window", "window": {"days": ["mon", "tue", "wed", "thu", "fri"], "blocks": [
    {"start": "09:00", "end": "11:30"}, {"start": "14:00", "end": "17:00"}]}}


def _sequence(calendars: bool) -> dict:
    return {
        "name": f"Preview bench ({'on' if calendars else 'off'})", "sender_name": "Bench",
        "sender_email": "bench@sales.example", "timezone": "Asia/Seoul",
        "send_policy": WINDOW if calendars else {"mode": "as_soon_as_due"},
        "holidays": {"country": "KR"} if calendars else "none",
        "zone_mode": "contact" if calendars else "sequence",
        "steps": [{"channel": "email", "body": f"step {i + 1}", "wait_days": wait,
                   "wait_unit": unit if calendars else "days",
                   **({"subject": "Hello"} if i == 0 else {})}
                  for i, (wait, unit) in enumerate(WAITS)]}


def _starts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    first = datetime(2026, 1, 1, tzinfo=UTC)
    return [(first + timedelta(seconds=rng.randrange(3 * 365 * 86400))).isoformat()
            for _ in range(n)]


async def _times(api, sequence_id: str, requests: int, contact_id: str | None,
                 seed: int) -> tuple[list[float], list[float]]:
    client, server = [], []
    params = {"contact_id": contact_id} if contact_id else {}
    for i, start in enumerate(_starts(WARMUP + requests, seed)):
        began = time.perf_counter()
        answer = await api.get(f"/v1/sequences/{sequence_id}/schedule",
                               params={"start": start, **params})
        took = (time.perf_counter() - began) * 1000
        answer.raise_for_status()
        if i < WARMUP:
            continue
        client.append(took)
        timing = server_timing(answer.headers.get("server-timing", ""))
        if "app" in timing:
            server.append(timing["app"])
    return client, server


async def run(quick: bool) -> list[Result]:
    requests = 100 if quick else 500
    with tempfile.TemporaryDirectory(prefix="sequences-bench-preview-") as temp:
        config = StackConfig(data_dir=Path(temp), gateway_port=0, nats_port=0, smtp_port=0,
                             mail_viewer_port=0, log_to_files=True,
                             database_url=common.fresh_database("preview"))
        with Stack(config) as stack:
            async with stack.api_client(timeout=60) as api:
                put = await api.put("/v1/calendar", json={"skip_dates": [
                    {"date": "2027-05-14", "name": "Offsite"}]})
                put.raise_for_status()
                contact = await api.post("/v1/contacts", json={
                    "email": "preview@customer.example", "timezone": "America/Los_Angeles"})
                contact.raise_for_status()
                ids = {}
                for calendars in (False, True):
                    made = await api.post("/v1/sequences", json=_sequence(calendars))
                    made.raise_for_status()
                    ids[calendars] = made.json()["id"]
                common.progress(f"schedule_preview: {requests} requests each, off then on")
                off = await _times(api, ids[False], requests, None, seed=16)
                on = await _times(api, ids[True], requests, contact.json()["id"], seed=16)
                floor = await _floor(api, requests)
    results = []
    for name, q in (("p50", 50), ("p95", 95)):
        value, base = percentile(on[0], q), percentile(off[0], q)
        row = Result(f"schedule preview over HTTP (5 steps; window, KR holidays, skip date,"
                     f" contact's zone): round trip {name}", value, "ms", base,
                     f"calendars off, {name}", value / base if base else None,
                     details={"requests": requests,
                              "server_timing_on_ms": _spread(on[1]),
                              "server_timing_off_ms": _spread(off[1]),
                              "round_trip_on_ms": _spread(on[0]),
                              "round_trip_off_ms": _spread(off[0])})
        if name == "p95":
            row.target, row.passed = f"< {TARGET_MS:g} ms", value < TARGET_MS
        results.append(row)
    results.append(Result(
        "an API read through the same path (GET /v1/calendar: gateway -> NATS -> a service ->"
        " PostgreSQL), round trip p95", percentile(floor, 95), "ms",
        details={"round_trip_ms": _spread(floor)}))
    if on[1] and off[1]:
        value, base = percentile(on[1], 95), percentile(off[1], 95)
        results.append(Result("schedule preview, the gateway's Server-Timing p95, calendars on",
                              value, "ms", base, "calendars off", value / base if base else None))
    return results


async def _floor(api, requests: int) -> list[float]:
    """What any API read costs on this machine now: the floor under the preview's figures."""
    took = []
    for i in range(WARMUP + requests):
        began = time.perf_counter()
        (await api.get("/v1/calendar")).raise_for_status()
        if i >= WARMUP:
            took.append((time.perf_counter() - began) * 1000)
    return took


def _spread(values: list[float]) -> dict:
    if not values:
        return {}
    return {"p50": round(percentile(values, 50), 2), "p95": round(percentile(values, 95), 2),
            "max": round(max(values), 2)}
