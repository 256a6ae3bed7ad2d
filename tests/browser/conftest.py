"""Browser tests: Playwright for Python driving Debian's Chromium against the e2e stack.

Playwright's *async* API, on one event loop for the whole session. The sync API does not mix
with pytest-asyncio (asyncio_mode = auto): between its calls it marks its own event loop as
running in the main thread, so once a session-wide sync browser exists every later async test
or fixture in the run, browser or not, fails with "Cannot run the event loop while another loop
is running". So every test in this folder is an `async def` on the session's loop (the marker
is added below, with `browser`), and so are the fixtures that touch the browser. A test can
await the stack's API client, `tests.support.eventually` and the page in one place.

    async def test_something(stack, page):
        await page.goto(f"{stack.gateway_url}/…")
        await assert_accessible(page, "something")       # tests/browser/helpers.py
        await screenshot(page, "something")              # docs/screenshots/something.png

Chromium: /usr/bin/chromium (Debian's `chromium`; override with CHROMIUM=path), with
`fonts-noto-cjk` for Korean; .ci/run installs both. Playwright's own browser download is not
used. Without Chromium the tests fail (they do not skip): CI must have it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import async_playwright

from tests.support import in_own_workspace

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
HERE = Path(__file__).resolve().parent
# every page a test opens: English, a laptop's window
CONTEXT = {"locale": "en-US", "viewport": {"width": 1280, "height": 800}}
# the app loads nothing from other hosts (issue 12: no CDN at run time); anything else is
# aborted and fails the test
LOCAL = re.compile(r"^(https?|wss?)://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?(/|$)")


def pytest_collection_modifyitems(items):
    on_session_loop = pytest.mark.asyncio(loop_scope="session")
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.browser)
            if pytest_asyncio.is_async_test(item):
                item.add_marker(on_session_loop, append=False)


@pytest.fixture(scope="module")
def stack(shared_stack, request):
    """The whole system on free ports: the run's shared stack, in a workspace of this module's
    own (as in tests/e2e)."""
    return in_own_workspace(shared_stack, request.module.__name__)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser():
    """One headless Chromium for the whole run (about half a second to start)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"no Chromium at {CHROMIUM}: the browser tests need Debian's packages `chromium`"
            " and `fonts-noto-cjk` (apt-get install chromium fonts-noto-cjk; .ci/run installs"
            " them when missing), or CHROMIUM=/path/to/chromium", pytrace=False)
    async with async_playwright() as playwright:
        # as root (CI) Chromium refuses to start without --no-sandbox
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        yield launched
        await launched.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser):
    """A page in a fresh browser context (no cookies, no storage) for each test."""
    context = await browser.new_context(**CONTEXT)
    elsewhere: list[str] = []

    async def refuse(route):
        elsewhere.append(route.request.url)
        await route.abort()

    await context.route(lambda url: not LOCAL.match(url) and not url.startswith(
        ("data:", "blob:", "about:")), refuse)
    yield await context.new_page()
    await context.close()
    if elsewhere:
        pytest.fail(f"the page asked for other hosts (aborted): {elsewhere}", pytrace=False)


@pytest_asyncio.fixture(loop_scope="session")
async def signed_in_page(stack, page):
    """A page signed in to the stack's dev workspace, as a person would: the sign-in form,
    filled with the dev user's email and password (what `make up` prints)."""
    await page.goto(f"{stack.gateway_url}/sign-in")
    await page.get_by_label("Email").fill(stack.workspace["user_email"])
    await page.get_by_label("Password").fill(stack.workspace["password"])
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{stack.gateway_url}/campaigns")
    yield page
