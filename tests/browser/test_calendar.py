"""Settings › Calendar and the builder's calendar fields in a real browser: the empty state; a
country found by typing in the search box (the select narrows, the region select follows by
htmx); the default send window saved; a skip date added and removed after the confirmation;
the page in Korean; a new sequence starting with the workspace's window and taking a country's
holidays from the same select. Each screen passes axe. Screenshots:
docs/screenshots/calendar-*.png."""

from __future__ import annotations

import re
import uuid

import pytest_asyncio
from playwright.async_api import expect

from tests.browser.helpers import assert_accessible, screenshot
from tests.browser.test_empty_and_confirm import _in_language


@pytest_asyncio.fixture(loop_scope="session")
async def api(stack):
    async with stack.api_client() as client:
        yield client


async def test_the_calendar_screen_in_the_browser(stack, api, signed_in_page):
    page, app = signed_in_page, stack.gateway_url
    await page.goto(f"{app}/settings")
    await page.get_by_role("link", name="Calendar").first.click()
    await page.wait_for_url(f"{app}/settings/calendar")
    await expect(page.get_by_role("heading", name="No default calendar yet")).to_be_visible()
    await assert_accessible(page, "calendar (empty)")
    await screenshot(page, "calendar-empty")

    # the search box narrows the country select; one left is chosen, and its regions load
    search = page.get_by_label("Find a country")
    country = page.locator("#f-holidays-country")
    await search.fill("germany")
    await expect(country).to_have_value("DE")
    region = page.locator("#f-holidays-subdivision")
    await expect(region.locator('option[value="BY"]')).to_have_count(1)
    await region.select_option("BY")
    for day in ("Mon", "Tue", "Wed", "Thu", "Fri"):
        await page.get_by_label(day, exact=True).check()
    await page.get_by_label("Block 1 from").fill("09:00")
    await page.locator("#f-send_window-block-0-end").fill("17:00")
    await page.get_by_role("button", name="Save the calendar").click()
    await expect(page.get_by_role("status")).to_contain_text("The calendar is saved")
    saved = (await api.get("/v1/calendar")).json()
    assert saved["holidays"] == {"country": "DE", "subdivision": "BY"}
    assert saved["send_window"]["blocks"] == [{"start": "09:00", "end": "17:00"}]

    # a field error next to the field: an overlapping block, nothing saved
    await page.get_by_label("Block 2 from").fill("16:00")
    await page.locator("#f-send_window-block-1-end").fill("18:00")
    await page.get_by_role("button", name="Save the calendar").click()
    await expect(page.locator("#f-send_window-blocks-error")).to_have_text(
        "Time blocks may not overlap.")
    await assert_accessible(page, "calendar (field error)")
    await screenshot(page, "calendar-field-error")

    # a skip date, then removed after the confirmation
    await page.goto(f"{app}/settings/calendar")
    await page.get_by_label("Date", exact=True).fill("2027-05-04")
    await page.get_by_label("Name (optional)").fill("Company offsite")
    await page.get_by_role("button", name="Add the skip date").click()
    row = page.get_by_role("row", name=re.compile("2027-05-04"))
    await expect(row).to_contain_text("Company offsite")
    await assert_accessible(page, "calendar (saved)")
    await screenshot(page, "calendar-en")
    await row.get_by_role("link", name="Remove 2027-05-04").click()
    dialog = page.get_by_role("alertdialog")
    await expect(dialog).to_contain_text("Remove the skip date 2027-05-04 · Company offsite?")
    await assert_accessible(page, "calendar (confirm)")
    await screenshot(page, "calendar-confirm-remove")
    await dialog.get_by_role("button", name="Remove").click()
    await expect(page.get_by_role("status")).to_contain_text("2027-05-04 is no longer a skip date.")
    await page.get_by_label("Date", exact=True).fill("2027-10-01")
    await page.get_by_label("Name (optional)").fill("창립기념일")
    await page.get_by_role("button", name="Add the skip date").click()
    await expect(page.get_by_role("row", name=re.compile("2027-10-01"))).to_be_visible()

    await page.goto(f"{app}/settings/calendar")  # loaded, with its scripts
    try:
        await _in_language(page, "ko")
        await expect(page.get_by_role("heading", name="캘린더", exact=True)).to_be_visible()
        await expect(page.locator("#f-holidays-country option:checked")).to_have_text(
            "독일 (DE)")
        await assert_accessible(page, "calendar (Korean)")
        await screenshot(page, "calendar-ko")
    finally:
        await _in_language(page, "en")


async def test_the_builder_starts_with_the_workspaces_window_and_picks_holidays(
        stack, api, signed_in_page):
    page, app = signed_in_page, stack.gateway_url
    window = {"days": ["mon", "tue", "wed", "thu"],
              "blocks": [{"start": "10:00", "end": "12:00"}, {"start": "14:00", "end": "16:30"}]}
    current = (await api.get("/v1/calendar")).json()
    put = await api.put("/v1/calendar", json={"holidays": current["holidays"],
                                              "skip_dates": current["skip_dates"],
                                              "send_window": window})
    assert put.status_code == 200, put.text
    await page.goto(f"{app}/sequences/new")
    await expect(page.get_by_label("Within a send window")).to_be_checked()
    await expect(page.get_by_label("Thu", exact=True)).to_be_checked()
    await expect(page.get_by_label("Fri", exact=True)).not_to_be_checked()
    await expect(page.locator("#f-block-1-end")).to_have_value("16:30")

    name = f"Calendar built {uuid.uuid4().hex[:6]}"
    await page.get_by_label("Name", exact=True).fill(name)
    await page.get_by_label("Timezone", exact=True).fill("America/New_York")
    await page.locator("#f-holidays-choice").select_option("calendar")
    await page.get_by_label("Find a country").fill("united states")  # one left: chosen
    await expect(page.locator("#f-holidays-country")).to_have_value("US")
    await expect(page.locator('#f-holidays-subdivision option[value="NY"]')).to_have_count(1)
    await page.locator("#f-holidays-subdivision").select_option("NY")
    await page.locator("#step-0").get_by_label("Subject").fill("Hello")
    await page.locator("#step-0").get_by_label("Message").fill("A first note.")
    await assert_accessible(page, "builder (calendar fields)")
    await page.locator("#f-holidays").screenshot(path=str(
        (await screenshot(page, "calendar-builder")).with_name("calendar-builder-holidays.png")))
    await page.get_by_role("button", name="Save and go live").click()
    await page.wait_for_url(re.compile(r"/sequences/[0-9a-f-]{36}$"))
    sequence_id = page.url.rsplit("/", 1)[1]
    saved = (await api.get(f"/v1/sequences/{sequence_id}")).json()
    assert saved["holidays"] == {"country": "US", "subdivision": "NY"}
    assert (saved["send_policy"]["mode"], saved["send_policy"]["window"]) == ("window", window)
