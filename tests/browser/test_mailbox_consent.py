"""Connecting a Google mailbox in a real browser, against the local OAuth2 authorization server
(tests/oauth_servers.py): the workspace's OAuth client is saved, the mailbox is added with
"Google (OAuth2)", Connect goes to the provider and back through the gateway's callback. A
person who presses Deny comes back to the mailboxes told why; the second try gives consent,
and the page says so. Both pages pass axe."""

from __future__ import annotations

import re

import pytest_asyncio
from playwright.async_api import expect

from sequences.devstack.ports import free_port
from tests.browser.helpers import assert_accessible, screenshot
from tests.e2e.test_oauth_mailboxes import oauth  # noqa: F401 (the local provider, a fixture)

ADDRESS = "consent.rep@oauth.example"


@pytest_asyncio.fixture(loop_scope="session")
async def api(stack):
    async with stack.api_client() as client:
        yield client


async def test_a_rep_connects_a_google_mailbox_after_denying_once(stack, api, oauth,
                                                                 signed_in_page):
    page = signed_in_page
    await page.goto(f"{stack.gateway_url}/settings/mailboxes")
    settings = oauth.client_settings()
    google = page.locator("#oauth-google")
    await google.get_by_label("Client ID").fill(settings["client_id"])
    await google.get_by_label("Client secret").fill(settings["client_secret"])
    await google.get_by_label("Authorization endpoint").fill(settings["authorize_url"])
    await google.get_by_label("Token endpoint").fill(settings["token_url"])
    await google.get_by_role("button", name="Save Google client").click()
    await expect(page.locator("#oauth-google")).to_contain_text("set up")

    await page.get_by_label("Address", exact=True).fill(ADDRESS)
    await page.get_by_label("Signs in with").select_option("google")
    smtp = page.get_by_role("group", name="Sending (SMTP)")
    await smtp.get_by_label("Server").fill("127.0.0.1")
    await smtp.get_by_label("Port").fill(str(free_port()))
    await page.get_by_role("button", name="Connect mailbox").click()
    row = page.locator("tr", has=page.get_by_text(ADDRESS, exact=True))
    await expect(row).to_contain_text("consent needed")

    connect = page.get_by_role("button", name=f"Connect {ADDRESS} with Google")
    oauth.deny = True
    try:
        await connect.click()
        await page.wait_for_url(re.compile(r"/settings/mailboxes\?consent_refused="))
    finally:
        oauth.deny = False
    await expect(page.get_by_role("alert")).to_contain_text("did not give consent (access_denied)")
    await expect(row).to_contain_text("consent needed")

    await connect.click()  # through the provider and the gateway's /oauth/callback
    await page.wait_for_url(re.compile(r"/settings/mailboxes\?connected="))
    await expect(page.get_by_role("status").filter(has_text="Consent given")).to_contain_text(
        f"{ADDRESS} signs in with Google now")
    await expect(row).to_contain_text("consent given")
    await assert_accessible(page, "mailboxes after consent")
    await screenshot(page, "mailbox-consent-given")

    [mailbox] = [m for m in (await api.get("/v1/mailboxes")).json() if m["address"] == ADDRESS]
    assert mailbox["auth"] == "oauth2" and mailbox["oauth_connected"], mailbox
    assert oauth.token_requests.count("authorization_code") == 1  # the denied try asked nothing
