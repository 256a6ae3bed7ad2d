"""Settings › Calendar against the running system (this module's own workspace): the empty
state, holidays picked from the `holidays` package's countries and a default send window that
new sequences start with; field errors next to the field in English and Korean, nothing
written; skip dates added and removed (after a confirmation), none lost to concurrent edits;
a form saved on a calendar someone changed meanwhile says so (409) and keeps what was typed;
the API's `expected_version`."""

from __future__ import annotations

import asyncio
import html
import re

import pytest

from tests.e2e.test_web_app import main_of
from tests.e2e.test_web_contacts import error_of
from tests.support import web_client

WINDOW = [("send_window.days", "mon"), ("send_window.days", "tue"),
          ("send_window.days", "wed"), ("send_window.days", "thu"), ("send_window.days", "fri"),
          ("send_window.blocks[0].start", "09:00"), ("send_window.blocks[0].end", "11:30"),
          ("send_window.blocks[1].start", "14:00"), ("send_window.blocks[1].end", "17:00")]


@pytest.fixture
async def web(stack):
    async with web_client(stack) as client:
        yield client


async def version(api) -> int:
    calendar = await api.get("/v1/calendar")
    assert calendar.status_code == 200, calendar.text
    return calendar.json()["version"]


def form(web, current: int, country: str = "", subdivision: str = "", window=()) -> dict:
    """The calendar form's fields (httpx takes a repeated field as a list)."""
    fields: dict[str, list[str]] = {}
    for name, value in [("csrf_token", web.csrf), ("version", str(current)),
                        ("holidays.country", country), ("holidays.subdivision", subdivision),
                        *window]:
        fields.setdefault(name, []).append(value)
    return fields


def selected(page: str, select_id: str) -> str:
    found = re.search(rf'<select id="{select_id}".*?</select>', page, re.S)
    assert found, f"no select {select_id}"
    chosen = re.search(r'<option value="([^"]*)" selected>', found.group(0))
    return chosen.group(1) if chosen else ""


async def test_the_calendar_starts_empty_and_saves_holidays_and_a_default_window(web, api):
    page = await web.get("/settings/calendar")
    assert page.status_code == 200
    assert "No default calendar yet" in page.text and "No skip dates" in page.text
    assert '<option value="KR">South Korea (KR)</option>' in page.text  # Babel's names
    saved = await web.post("/settings/calendar", data=form(web, await version(api), "US", "CA",
                                                          WINDOW))
    assert saved.status_code == 303 and saved.headers["location"] == "/settings/calendar?saved=1"
    calendar = (await api.get("/v1/calendar")).json()
    assert calendar["holidays"] == {"country": "US", "subdivision": "CA"}
    assert calendar["send_window"] == {"days": ["mon", "tue", "wed", "thu", "fri"], "blocks": [
        {"start": "09:00", "end": "11:30"}, {"start": "14:00", "end": "17:00"}]}
    shown = (await web.get("/settings/calendar?saved=1")).text
    assert "No default calendar yet" not in shown and "The calendar is saved" in shown
    assert selected(shown, "f-holidays-country") == "US"
    assert selected(shown, "f-holidays-subdivision") == "CA"
    regions = await web.get("/settings/calendar/subdivisions", params={"holidays.country": "DE"})
    assert 'value="BY"' in regions.text and "Bayern" in regions.text
    # a new sequence starts with the workspace's window; its holidays are a select too
    builder = (await web.get("/sequences/new")).text
    assert 'id="f-send_policy-mode-window" name="send_policy.mode" value="window" checked' in builder
    assert 'value="11:30"' in builder and '<select id="f-holidays-country"' in builder
    # none: every day and block emptied
    cleared = await web.post("/settings/calendar", data=form(web, await version(api), "JP"))
    assert cleared.status_code == 303
    assert (await api.get("/v1/calendar")).json()["send_window"] is None


@pytest.mark.parametrize("language, country_error, blocks_error", [
    ("en", "Unknown country: use a code such as KR, US, JP or DE.",
     "Time blocks may not overlap."),
    ("ko", "알 수 없는 국가입니다. KR, US, JP, DE 같은 코드를 쓰세요.",
     "시간대가 서로 겹치면 안 됩니다."),
])
async def test_bad_fields_are_named_next_to_the_field_and_nothing_is_written(
        stack, api, language, country_error, blocks_error):
    before = await version(api)
    async with web_client(stack, language=language) as web:
        unknown = await web.post("/settings/calendar", data=form(web, before, "XX"))
        assert unknown.status_code == 422
        assert error_of(unknown.text, "f-holidays") == country_error
        overlapping = [("send_window.days", "mon"),
                       ("send_window.blocks[0].start", "09:00"),
                       ("send_window.blocks[0].end", "12:00"),
                       ("send_window.blocks[1].start", "11:00"),
                       ("send_window.blocks[1].end", "13:00")]
        refused = await web.post("/settings/calendar", data=form(web, before, "KR", "",
                                                                 overlapping))
        assert refused.status_code == 422
        assert error_of(refused.text, "f-send_window-blocks") == blocks_error
        assert 'value="11:00"' in refused.text  # what was typed stays
        bad_day = await web.post("/settings/calendar/skip-dates", data={
            "csrf_token": web.csrf, "date": "2027-02-30", "name": "Offsite"})
        assert bad_day.status_code == 422 and error_of(bad_day.text, "f-date")
    assert await version(api) == before


async def test_skip_dates_are_added_removed_after_asking_and_none_is_lost_to_a_race(web, api):
    days = [f"2027-05-{day:02d}" for day in range(3, 9)]
    added = await asyncio.gather(*(web.post("/settings/calendar/skip-dates", data={
        "csrf_token": web.csrf, "date": day, "name": f"Offsite {day}"}) for day in days))
    assert [r.status_code for r in added] == [303] * len(days)
    skip_dates = (await api.get("/v1/calendar")).json()["skip_dates"]
    assert sorted(s["date"] for s in skip_dates) == days  # concurrent adds: every one kept
    page = (await web.get("/settings/calendar")).text
    assert 'href="/settings/calendar/skip-dates/remove?date=2027-05-03"' in page
    asked = await web.get("/settings/calendar/skip-dates/remove", params={"date": "2027-05-03"})
    assert asked.status_code == 200 and 'role="alertdialog"' in asked.text
    assert "Remove the skip date 2027-05-03 · Offsite 2027-05-03?" in html.unescape(asked.text)
    removed = await asyncio.gather(*(web.post(
        f"/settings/calendar/skip-dates/remove?date={day}", data={"csrf_token": web.csrf})
        for day in days[:3]))
    assert [r.status_code for r in removed] == [303] * 3
    left = sorted(s["date"] for s in (await api.get("/v1/calendar")).json()["skip_dates"])
    assert left == days[3:]
    gone = await web.post("/settings/calendar/skip-dates/remove?date=2027-05-03",
                          data={"csrf_token": web.csrf})
    assert gone.status_code == 404 and "2027-05-03 is not a skip date." in gone.text


async def test_a_form_saved_on_a_calendar_changed_meanwhile_says_so_and_keeps_the_choices(
        web, api):
    seen = await version(api)
    now = (await api.get("/v1/calendar")).json()
    other = await api.put("/v1/calendar", json={
        "holidays": now["holidays"], "skip_dates": now["skip_dates"],
        "send_window": now["send_window"], "expected_version": seen})
    assert other.status_code == 200, other.text  # someone else saved in between
    stale = await web.post("/settings/calendar", data=form(web, seen, "DE", "BY"))
    assert stale.status_code == 409
    assert "Someone changed the calendar meanwhile" in main_of(stale.text)
    assert selected(stale.text, "f-holidays-country") == "DE"
    assert f'name="version" value="{seen + 1}"' in stale.text
    again = await web.post("/settings/calendar", data=form(web, seen + 1, "DE", "BY"))
    assert again.status_code == 303
    refused = await api.put("/v1/calendar", json={"holidays": None, "expected_version": seen})
    assert refused.status_code == 409
    assert [e["field"] for e in refused.json()["errors"]] == ["expected_version"]
    assert (await api.get("/v1/calendar")).json()["holidays"] == {"country": "DE",
                                                                  "subdivision": "BY"}
