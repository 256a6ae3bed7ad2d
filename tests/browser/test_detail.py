"""The sequence detail and the Enroll screen in a real browser: the enrollee table updating by
itself (a reply dropped into the dev mailbox turns a badge to Replied without a reload, and a
checked box stays checked across the polls), the Segment tab's count then enrollment, a
screenshot of each tab, axe on every page."""

from __future__ import annotations

import uuid

from tests.browser.helpers import assert_accessible, screenshot
from tests.e2e.test_flow import SEQUENCE, mail_to, new_contact
from tests.support import drop_reply, eventually


async def _sequence_with_enrollees(stack, api, tag: str) -> tuple[str, list[tuple[str, str]]]:
    created = await api.post("/v1/sequences", json={**SEQUENCE, "name": "견적 후 후속 (browser)"})
    sequence_id = created.json()["id"]
    people = []
    # at companies of their own: a colleague's reply would stop the other (issue 13 item 4)
    for name, company in (("김민수", "한빛상사"), ("이서연", "가나전자")):
        contact_id, email = await new_contact(api, name=name, company=company, tags=[tag])
        enrolled = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                                  json={"contact_id": contact_id})
        people.append((enrolled.json()["id"], email))
    return sequence_id, people


async def _first_mail(stack, email: str):
    async def sent():
        return mail_to(stack, email)
    return (await eventually(sent, timeout=30))[0]


async def test_the_enrollee_table_shows_a_reply_without_a_reload(stack, signed_in_page):
    page = signed_in_page
    async with stack.api_client() as api:
        sequence_id, [(replied_id, email), (other_id, _)] = await _sequence_with_enrollees(
            stack, api, f"b{uuid.uuid4().hex[:6]}")
    first = await _first_mail(stack, email)
    await page.goto(f"{stack.gateway_url}/sequences/{sequence_id}?tab=enrollees")
    row = page.locator("tr", has=page.locator(f'a[href="/enrollments/{replied_id}"]'))
    await row.locator(".badge").get_by_text("Active").wait_for()
    # a box checked before the change stays checked after the polls that show it
    await page.locator(f"#pick-{other_id}").check()
    await page.evaluate("window.__notReloaded = true")

    await drop_reply(stack, first["Message-ID"], "네, 통화 가능합니다")

    await row.locator(".badge").get_by_text("Replied").wait_for(timeout=30_000)
    assert await page.evaluate("window.__notReloaded") is True  # the same page, swapped rows
    assert await page.locator(f"#pick-{other_id}").is_checked()
    await page.locator("#detail-counts").get_by_text("Replied").wait_for()
    await assert_accessible(page, "sequence detail: enrollees")
    await screenshot(page, "sequence-detail-enrollees")

    # stopping the checked one asks first, saying how many
    await page.get_by_role("button", name="Stop selected").click()
    await page.get_by_role("heading", name="Stop 1 enrollee?").wait_for()
    await assert_accessible(page, "confirm stop")
    await screenshot(page, "sequence-detail-confirm-stop")

    for tab, name in (("steps", "Steps"), ("schedule", "Schedule"), ("settings", "Settings")):
        await page.goto(f"{stack.gateway_url}/sequences/{sequence_id}?tab={tab}")
        link = page.get_by_role("navigation", name="Sequence").get_by_role("link", name=name)
        assert await link.get_attribute("aria-current") == "page"
        await assert_accessible(page, f"sequence detail: {tab}")
        await screenshot(page, f"sequence-detail-{tab}")


async def test_the_segment_tab_counts_first_then_enrolls(stack, signed_in_page):
    page = signed_in_page
    tag = f"s{uuid.uuid4().hex[:6]}"
    async with stack.api_client() as api:
        sequence_id, _ = await _sequence_with_enrollees(stack, api, f"x{tag}")
        for _ in range(3):
            await new_contact(api, tags=[tag])
        opted, _ = await new_contact(api, tags=[tag])
        await api.post(f"/v1/contacts/{opted}/opt-out", json={})
    await page.goto(f"{stack.gateway_url}/sequences/{sequence_id}/enroll")
    await assert_accessible(page, "enroll: pick contacts")
    await screenshot(page, "enroll-pick")
    await page.get_by_role("link", name="Segment").click()
    await page.get_by_label("Tag").fill(tag)
    await page.get_by_role("button", name="Count who would be enrolled").click()
    await page.get_by_role("heading", name="Before you confirm").wait_for()
    assert await page.locator("#count-enrolled").inner_text() == "3"
    assert await page.locator("#count-opted-out").inner_text() == "1"
    await assert_accessible(page, "enroll: segment preview")
    await screenshot(page, "enroll-segment-preview")
    await page.get_by_role("button", name="Enroll 3").click()
    await page.get_by_role("heading", name="3 contacts enrolled").wait_for()
    assert await page.locator("#result-enrolled").inner_text() == "3"
    await assert_accessible(page, "enroll: segment result")
    await screenshot(page, "enroll-segment-result")
