"""The browser machinery itself, against what the gateway serves today: Chromium starts, opens
the running stack, takes screenshots, runs axe, renders Korean, and runs the vendored htmx and
Alpine. The app's own pages get their tests with the pages (issue 12)."""

from __future__ import annotations

import json
import struct

import pytest

from services.gateway.web.vendor import MANIFEST, VENDOR, scripts
from tests.browser.helpers import SCREENSHOTS, assert_accessible, screenshot

KOREAN = "한국어 자동 후속"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


async def test_the_browser_opens_the_running_gateway(stack, page, tmp_path):
    answer = await page.goto(f"{stack.gateway_url}/openapi.json")
    assert answer.ok
    spec = json.loads(await page.locator("body").inner_text())
    assert "/v1/contacts" in spec["paths"]
    health = await page.goto(f"{stack.gateway_url}/healthz")
    assert health.ok
    # (not of the OpenAPI document: 11,000 px tall, its screenshot takes ~14 s here)
    path = await screenshot(page, "healthz", directory=tmp_path)
    assert png_size(path.read_bytes()) == (1280, 800)


async def test_a_screenshot_is_of_the_whole_page(page, tmp_path):
    await page.set_content('<body style="margin:0"><div style="height:2000px">tall</div></body>')
    path = await screenshot(page, "tall", directory=tmp_path)
    assert png_size(path.read_bytes()) == (1280, 2000)
    assert SCREENSHOTS.name == "screenshots" and SCREENSHOTS.is_dir()
    with pytest.raises(ValueError):
        await screenshot(page, "../elsewhere", directory=tmp_path)


async def test_the_accessibility_check_names_every_serious_violation(page):
    await page.set_content(
        '<!doctype html><html><head><title>Broken</title></head><body><main>'
        '<img id="logo" src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">'
        '<button id="go"></button></main></body></html>')
    with pytest.raises(AssertionError) as failure:
        await assert_accessible(page, "broken page")
    message = str(failure.value)
    assert message.startswith("broken page: 3 accessibility violation(s)"), message
    for expected in ("image-alt (critical)", "#logo", "button-name (critical)", "#go",
                     "html-has-lang (serious)"):
        assert expected in message, message


async def test_the_accessibility_check_passes_a_clean_page(page):
    await page.set_content(
        '<!doctype html><html lang="en"><head><title>Clean</title></head><body><main>'
        '<h1>Auto follow-up</h1><button type="button">New auto follow-up</button>'
        '</main></body></html>')
    await assert_accessible(page, "clean page")


async def test_korean_renders_as_glyphs_not_boxes(page, tmp_path):
    """Without a Hangul font Chromium draws every syllable as the same empty box, so two
    different syllables render to identical pixels; with fonts-noto-cjk they differ."""
    await page.set_content(
        f'<html lang="ko"><body><p style="font-size:40px">{KOREAN}</p>'
        '<span id="a" style="font-size:40px">한</span> '
        '<span id="b" style="font-size:40px">국</span></body></html>')
    await screenshot(page, "korean", directory=tmp_path)
    first = await page.locator("#a").screenshot()
    second = await page.locator("#b").screenshot()
    boxes = first == second
    assert not boxes, (
        "Korean renders as boxes (no Hangul font): install Debian's fonts-noto-cjk"
        f" (fonts Chromium used: {await _fonts_of(page, '#a')})")


async def test_the_vendored_htmx_and_alpine_run_in_the_browser(page):
    versions = {e["name"]: e["version"] for e in json.loads(MANIFEST.read_text())["files"].values()}
    await page.set_content('<div x-data="{n: 2}"><span id="n" x-text="n * 21"></span></div>')
    for name in ("htmx", "alpine"):
        await page.add_script_tag(path=VENDOR / scripts()[name])
    assert await page.evaluate("htmx.version") == versions["htmx"]
    assert await page.evaluate("Alpine.version") == versions["alpine"]
    await page.locator("#n").filter(has_text="42").wait_for()


async def _fonts_of(page, selector: str) -> list[str]:
    cdp = await page.context.new_cdp_session(page)
    root = await cdp.send("DOM.getDocument")
    node = await cdp.send("DOM.querySelector", {"nodeId": root["root"]["nodeId"],
                                                "selector": selector})
    await cdp.send("CSS.enable")
    fonts = await cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node["nodeId"]})
    return [font["familyName"] for font in fonts["fonts"]]
