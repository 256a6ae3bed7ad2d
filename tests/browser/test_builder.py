"""The sequence builder in a real browser: build a two-step sequence, meet a field error on the
way (shown in place by htmx, with the focus on the list of problems), insert a variable with a
button at the cursor, save; the builder passes axe; then preview and send a test on the edit
page. Screenshots: docs/screenshots/builder-*.png."""

from __future__ import annotations

import re
import uuid

import pytest_asyncio
from playwright.async_api import expect

from tests.browser.helpers import assert_accessible, screenshot
from tests.e2e.test_flow import mail_to
from tests.support import eventually


@pytest_asyncio.fixture(loop_scope="session")
async def api(stack):
    async with stack.api_client() as client:
        yield client


async def test_building_a_sequence_in_the_browser(stack, api, signed_in_page):
    page = signed_in_page
    name = f"Browser built {uuid.uuid4().hex[:6]}"
    await page.get_by_role("link", name="New auto follow-up").first.click()
    await page.wait_for_url(re.compile(r"/sequences/new$"))
    await assert_accessible(page, "builder (new)")

    await page.get_by_label("Name", exact=True).fill(name)
    await page.get_by_label("Timezone", exact=True).fill("Asia/Seoul")
    await page.get_by_label("As soon as due").check()
    step = page.locator("#step-0")
    await step.get_by_label("Subject").fill("Quote for you")
    body = step.get_by_label("Message")
    await body.fill("Hello {{foo}},")

    # save: refused in place (htmx), the message under the message field, the focus on the
    # list of problems; nothing was saved
    await page.get_by_role("button", name="Save and go live").click()
    errors = page.locator("#builder-errors")
    await expect(errors).to_be_focused()
    message = page.locator("#f-steps-0-body-error")
    assert "Unknown variable {{foo}} at position 6" in await message.inner_text()
    assert await body.get_attribute("aria-invalid") == "true"
    assert await body.input_value() == "Hello {{foo}},"  # as typed
    await screenshot(page, "builder-field-error")

    # fix it with the variable buttons: at the cursor, with a fallback
    await body.fill("Hello , a follow-up on your quote.")
    await body.evaluate("e => e.setSelectionRange(6, 6)")
    await step.get_by_label("with fallback").fill("there")
    await step.get_by_role("button", name="{{고객명}}").click()
    assert await body.input_value() == "Hello {{고객명|there}}, a follow-up on your quote."

    # a second step, a call: it has no subject field to fill
    await page.get_by_role("button", name="+ Add step").click()
    second = page.locator("#step-1")
    channel = second.get_by_label("Channel")
    await expect(channel).to_be_focused()  # the new step's first field
    await channel.select_option("call")
    assert not await second.get_by_label("Subject").is_visible()
    await second.get_by_label("Message").fill("Call {{고객명}} about the quote")
    await second.get_by_label("Wait", exact=True).fill("3")
    await assert_accessible(page, "builder (two steps)")
    await screenshot(page, "builder-new")

    await page.get_by_role("button", name="Save and go live").click()
    await page.wait_for_url(re.compile(r"/sequences/[0-9a-f-]{36}$"))
    sequence_id = page.url.rsplit("/", 1)[1]
    saved = (await api.get(f"/v1/sequences/{sequence_id}")).json()
    assert saved["name"] == name and saved["send_policy"]["mode"] == "as_soon_as_due"
    assert [(s["channel"], s["body"]) for s in saved["steps"]] == [
        ("email", "Hello {{고객명|there}}, a follow-up on your quote."),
        ("call", "Call {{고객명}} about the quote")]

    # the edit page: the notice, a preview in place, a test sent to me
    await page.goto(f"{stack.gateway_url}/sequences/{sequence_id}/edit")
    assert "0 contacts are enrolled in this sequence" in await page.locator("main").inner_text()
    await page.get_by_role("link", name="Preview step 1").click()
    panel = page.locator("#preview-panel")
    await panel.get_by_text("Hello 김민수, a follow-up on your quote.").first.wait_for()
    # the email's HTML, in its sandboxed frame
    await page.frame_locator("iframe.preview-html").get_by_text("Hello 김민수").wait_for()
    await assert_accessible(page, "builder (edit, preview)")
    await screenshot(page, "builder-edit-preview")
    me = stack.workspace["user_email"]
    before = len(mail_to(stack, me))
    await panel.get_by_role("button", name="Send test to me").click()
    await panel.get_by_text(f"Sent to {me}.").wait_for()

    async def delivered():
        return len(mail_to(stack, me)) > before

    await eventually(delivered)
