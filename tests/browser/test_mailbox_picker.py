"""The sequence builder's mailbox picker in a real browser: the workspace's connected mailboxes
are offered as checkboxes (not typed addresses), the ones ticked become the sequence's pool, the
edit page shows them ticked; the picker passes axe."""

from __future__ import annotations

import re

import pytest_asyncio
from playwright.async_api import expect

from sequences.devstack.ports import free_port
from tests.browser.helpers import assert_accessible


@pytest_asyncio.fixture(loop_scope="session")
async def api(stack):
    async with stack.api_client() as client:
        yield client


async def test_the_builder_picks_the_pool_from_the_workspaces_mailboxes(stack, api,
                                                                       signed_in_page):
    addresses = ["pick.one@picker.example", "pick.two@picker.example"]
    for address in addresses:
        made = await api.post("/v1/mailboxes", json={
            "address": address, "display_name": "영업 " + address.split("@")[0],
            "smtp": {"host": "127.0.0.1", "port": free_port(), "security": "none"}})
        assert made.status_code == 201, made.text
    page = signed_in_page
    await page.goto(f"{stack.gateway_url}/sequences/new")
    picker = page.get_by_role("group", name="Send from mailboxes")
    for address in addresses:
        await expect(picker.get_by_label(re.compile(re.escape(address)))).not_to_be_checked()
    await assert_accessible(page, "builder (mailbox picker)")

    await page.get_by_label("Name", exact=True).fill("Picked pool")
    await page.get_by_label("Timezone", exact=True).fill("Asia/Seoul")
    await page.get_by_label("As soon as due").check()
    step = page.locator("#step-0")
    await step.get_by_label("Subject").fill("Hello")
    await step.get_by_label("Message").fill("Hello {{고객명|there}}")
    await picker.get_by_label(re.compile(re.escape(addresses[1]))).check()
    await page.get_by_role("button", name="Save and go live").click()
    await page.wait_for_url(re.compile(r"/sequences/[0-9a-f-]{36}$"))
    sequence_id = page.url.rsplit("/", 1)[1]
    saved = (await api.get(f"/v1/sequences/{sequence_id}")).json()
    assert saved["mailbox_pool"] == [addresses[1]], saved

    await page.goto(f"{stack.gateway_url}/sequences/{sequence_id}/edit")
    picker = page.get_by_role("group", name="Send from mailboxes")
    await expect(picker.get_by_label(re.compile(re.escape(addresses[1])))).to_be_checked()
    await expect(picker.get_by_label(re.compile(re.escape(addresses[0])))).not_to_be_checked()
