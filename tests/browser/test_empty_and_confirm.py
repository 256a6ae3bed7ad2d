"""Empty states and confirmation pages, in English and in Korean, in a real browser: each says
what to do next (or what the action will do) in the reader's language, passes axe, and is
screenshotted (docs/screenshots/empty-*.png, confirm-*.png, one per language). The module has
a workspace of its own (tests/browser/conftest.py), so its lists start empty."""

from __future__ import annotations

import uuid

from sequences.i18n import translate
from tests.browser.helpers import assert_accessible, screenshot
from tests.e2e.test_flow import SEQUENCE

LANGUAGES = ("en", "ko")


async def _in_language(page, language: str) -> None:
    """The user's language, switched with the navigation's select (kept in their profile)."""
    if await page.locator("html").get_attribute("lang") != language:
        await page.locator("#language-switch").select_option(language)
        await page.wait_for_function(f"document.documentElement.lang === '{language}'")


async def _shows(page, shot: str, path: str, heading: str, language: str, **values) -> None:
    await page.goto(path)
    words = translate(language, heading, **values)
    await page.get_by_role("heading", name=words, exact=True).wait_for()
    assert await page.locator("html").get_attribute("lang") == language
    await assert_accessible(page, f"{shot} ({language})")
    await screenshot(page, f"{shot}-{language}")


async def test_empty_states_then_confirmations_in_english_and_korean(stack, signed_in_page):
    page, app = signed_in_page, stack.gateway_url
    try:
        for language in LANGUAGES:
            await _in_language(page, language)
            await _shows(page, "empty-campaigns", f"{app}/campaigns", "No sequences yet",
                         language)
            await _shows(page, "empty-tasks", f"{app}/tasks", "No tasks due.", language)
            await _shows(page, "empty-mailboxes", f"{app}/settings/mailboxes",
                         "No sender mailboxes yet", language)

        async with stack.api_client() as api:
            name = f"견적 후속 {uuid.uuid4().hex[:4]}"
            sequence_id = (await api.post("/v1/sequences", json={**SEQUENCE, "name": name})
                           ).json()["id"]
            for language in LANGUAGES:
                await _in_language(page, language)
                await _shows(page, "empty-enrollees",
                             f"{app}/sequences/{sequence_id}?tab=enrollees",
                             "Nobody enrolled yet", language)
                await _shows(page, "empty-enroll-pick", f"{app}/sequences/{sequence_id}/enroll",
                             "No contacts yet", language)
            contact_id = (await api.post("/v1/contacts", json={
                "name": "김민수", "email": f"kim.{uuid.uuid4().hex[:6]}@customer.example"})
                          ).json()["id"]
            [key] = (await api.get("/v1/api-keys")).json()["items"]
            webhook = (await api.post("/v1/webhooks", json={
                "url": "https://hooks.example/sequences", "event_types": ["SequenceArchived"]})
                       ).json()

        for language in LANGUAGES:
            await _in_language(page, language)
            await _shows(page, "confirm-archive", f"{app}/sequences/{sequence_id}/archive",
                         "Archive %(name)s?", language, name=name)
            await _shows(page, "confirm-opt-out", f"{app}/contacts/{contact_id}/opt-out",
                         "Opt out %(name)s?", language, name="김민수")
            await _shows(page, "confirm-delete-contact", f"{app}/contacts/{contact_id}/delete",
                         "Delete %(name)s?", language, name="김민수")
            await _shows(page, "confirm-revoke-key",
                         f"{app}/settings/api-keys/{key['key_id']}/revoke", "Revoke %(name)s?",
                         language, name=key["name"])
            await _shows(page, "confirm-delete-webhook",
                         f"{app}/settings/webhooks/{webhook['webhook_id']}/delete",
                         "Delete the webhook to %(url)s?", language, url=webhook["url"])
            await _shows(page, "confirm-rotate-webhook-secret",
                         f"{app}/settings/webhooks/{webhook['webhook_id']}/rotate",
                         "Rotate the signing secret of %(url)s?", language, url=webhook["url"])
        # asked, not done: Cancel leads back and nothing changed
        await page.get_by_role("link", name=translate("ko", "Cancel")).click()
        await page.wait_for_url(f"{app}/settings/webhooks")
        async with stack.api_client() as api:
            assert (await api.get(f"/v1/webhooks/{webhook['webhook_id']}")).status_code == 200
            assert (await api.get(f"/v1/sequences/{sequence_id}")).json()["state"] == "live"
    finally:
        await _in_language(page, "en")
