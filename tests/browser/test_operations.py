"""The operations page in a real browser: an admin reaches it from the navigation, sees every
durable consumer's backlog and the pipeline's figures, and a handler error that happens while
the page is open appears by itself (the page refreshes its figures) with its trace id; in
Korean too; a member has no link to it and is refused."""

from __future__ import annotations

import uuid

from playwright.async_api import expect
from sqlalchemy import text

from sequences.db import create_engine
from tests.browser.helpers import assert_accessible, screenshot
from tests.browser.test_empty_and_confirm import _in_language


async def _execute(database_url: str, statement: str, **values) -> None:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement), values)
    finally:
        await engine.dispose()


async def test_an_admin_watches_the_figures_and_an_error_appears_by_itself(stack,
                                                                          signed_in_page):
    page, app = signed_in_page, stack.gateway_url
    await page.get_by_role("navigation", name="Main").get_by_role("link",
                                                                   name="Operations").click()
    await page.wait_for_url(f"{app}/operations")
    await page.get_by_role("heading", name="Operations", level=1).wait_for()
    consumers = page.get_by_role("table", name="Each service's backlog of events")
    # every service's durable consumers are listed (names from contracts.subjects)
    for service in ("enrollment", "scheduler", "mailer", "webhooks"):
        await expect(consumers.get_by_role("cell", name=service).first).to_be_visible()
    await expect(page.get_by_text("emails sent in the last minute")).to_be_visible()

    trace_id = uuid.uuid4().hex
    await _execute(stack.database_url,
                   "INSERT INTO eventlog.handler_errors (consumer, event_type, stream_id, error,"
                   " trace_id) VALUES ('mailer-sends', 'StepDue', 'enrollment-ops-test',"
                   " 'RuntimeError: the SMTP server hung up', :trace)", trace=trace_id)
    errors = page.get_by_role("table", name="The newest first")
    # no reload: the figures swap themselves in every few seconds
    await expect(errors.get_by_text(trace_id)).to_be_visible(timeout=20_000)
    await expect(errors.get_by_text("RuntimeError: the SMTP server hung up")).to_be_visible()
    await assert_accessible(page, "operations")
    await screenshot(page, "operations-en")

    await _in_language(page, "ko")
    try:
        await page.get_by_role("heading", name="운영 현황", level=1).wait_for()
        await expect(page.get_by_text(trace_id)).to_be_visible()
        await assert_accessible(page, "operations (ko)")
        await screenshot(page, "operations-ko")
    finally:
        await _in_language(page, "en")

    await _execute(stack.database_url, "UPDATE gateway.users SET role = 'member'"
                   " WHERE user_id = :user", user=stack.workspace["user_id"])
    try:
        await page.goto(f"{app}/campaigns")
        await expect(page.get_by_role("navigation", name="Main").get_by_role(
            "link", name="Operations")).to_have_count(0)
        refused = await page.goto(f"{app}/operations")
        assert refused.status == 403
        await expect(page.get_by_text(trace_id)).to_have_count(0)
    finally:
        await _execute(stack.database_url, "UPDATE gateway.users SET role = 'admin'"
                       " WHERE user_id = :user", user=stack.workspace["user_id"])
