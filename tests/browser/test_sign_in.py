"""Signing in, in a real browser, and the first screen: keyboard only, accessible, screenshots."""

from __future__ import annotations

from tests.browser.helpers import assert_accessible, screenshot


async def test_sign_in_with_the_keyboard_and_see_the_empty_sequence_list(stack, page):
    await page.goto(f"{stack.gateway_url}/campaigns")
    assert "/sign-in?next=" in page.url
    await assert_accessible(page, "sign-in")
    await screenshot(page, "sign-in")
    # the email field has focus; type, Tab to the password, Enter submits
    await page.keyboard.type(stack.workspace["user_email"])
    await page.keyboard.press("Tab")
    await page.keyboard.type("wrong password")
    await page.keyboard.press("Enter")
    await page.get_by_text("That email and password do not match.").wait_for()
    await page.get_by_label("Password").fill(stack.workspace["password"])
    await page.get_by_label("Password").press("Enter")
    await page.wait_for_url(f"{stack.gateway_url}/campaigns")
    await page.get_by_role("heading", name="Auto follow-up").wait_for()
    await assert_accessible(page, "sequence list")


async def test_the_language_switch_shows_the_app_in_korean(stack, signed_in_page):
    page = signed_in_page
    await page.get_by_label("Language").select_option("ko")
    await page.get_by_role("heading", name="자동 후속", exact=True).wait_for()
    assert await page.locator("html").get_attribute("lang") == "ko"
    await assert_accessible(page, "sequence list (ko)")
    await page.get_by_label("언어").select_option("en")
    await page.get_by_role("heading", name="Auto follow-up").wait_for()
