"""Tasks, the enrollment timeline and Settings in a real browser: two call tasks completed with
the keyboard only (the focus goes on to the next task after each swap), a timeline read and
its causes followed, the profile switched to Korean and the same pages seen in Korean; a
screenshot of each screen, axe on every page."""

from __future__ import annotations

import uuid

from tests.browser.helpers import assert_accessible, screenshot
from tests.e2e.test_flow import SEQUENCE, new_contact
from tests.support import eventually

CALL = [
    {"channel": "email", "subject": "{{고객명}}님, 견적 건", "wait_days": 0, "body": "안녕하세요"},
    {"channel": "call", "wait_days": 0,
     "body": "{{고객명}}님께 전화: {{회사명}} 견적을 받으셨는지 확인하고, 다음 주 미팅을 잡으세요."},
]


async def _call_tasks(stack, names: list[str]) -> tuple[str, list[dict]]:
    """A sequence of an email then a call, these contacts enrolled; their tasks once due."""
    owner = f"최유진-{uuid.uuid4().hex[:4]}"
    async with stack.api_client() as api:
        created = await api.post("/v1/sequences", json={
            **SEQUENCE, "name": "견적 후 전화", "steps": CALL})
        sequence_id = created.json()["id"]
        for name in names:
            contact_id, _ = await new_contact(api, name=name, owner_name=owner)
            await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                           json={"contact_id": contact_id})

        async def due():
            items = (await api.get("/v1/tasks", params={"owner": owner})).json()["items"]
            return items if len(items) == len(names) else None

        tasks = await eventually(due, timeout=30)
    by_name = {task["contact_name"]: task for task in tasks}
    return sequence_id, [by_name[name] for name in names]


async def _focused(page) -> str:
    return await page.evaluate("document.activeElement && document.activeElement.id || ''")


async def _tab_to(page, element_id: str, limit: int = 60) -> None:
    """Tab through the page until `element_id` has the focus, as a keyboard user would."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await _focused(page) == element_id:
            return
    raise AssertionError(f"Tab never reached #{element_id}")


async def test_call_tasks_are_completed_with_the_keyboard_only(stack, signed_in_page):
    page = signed_in_page
    _, tasks = await _call_tasks(stack, ["김민수", "이서연"])
    first, second = (task["task_id"] for task in tasks)
    await page.goto(f"{stack.gateway_url}/tasks?whose=everyone")
    await page.get_by_role("heading", name="Tasks", exact=True).wait_for()
    await assert_accessible(page, "tasks")
    await screenshot(page, "tasks")

    # the order on the page is the list's (due first); do whichever comes first, then the next
    order = await page.locator("li.task").evaluate_all("items => items.map(i => i.id)")
    first, second = (item.removeprefix("task-") for item in order[:2])
    await _tab_to(page, f"note-{first}")
    await page.keyboard.type("통화함: 다음 주 화요일 미팅")
    await page.keyboard.press("Tab")  # to "Done"
    await page.keyboard.press("Enter")
    row = page.locator(f"#task-{first}")
    await row.locator(".badge").get_by_text("Done").wait_for()
    await row.get_by_text("Note: 통화함: 다음 주 화요일 미팅").wait_for()
    await eventually(lambda: _is_focused(page, f"note-{second}"), timeout=10)

    # straight on with the next one: Tab, Tab reaches "Skip"
    await page.keyboard.type("부재중, 다음에")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    await page.locator(f"#task-{second}").locator(".badge").get_by_text("Skipped").wait_for()
    await page.get_by_text("No open task left on this list.").wait_for()
    assert await page.evaluate(
        "document.activeElement.textContent.trim()") == "No open task left on this list."
    await assert_accessible(page, "tasks: completed")
    await screenshot(page, "tasks-completed")


async def _is_focused(page, element_id: str) -> bool:
    return await _focused(page) == element_id


async def test_read_a_timeline_and_follow_what_caused_an_event(stack, signed_in_page):
    page = signed_in_page
    _, [task] = await _call_tasks(stack, ["박서준"])
    await page.goto(f"{stack.gateway_url}/tasks?whose=everyone")
    await page.locator(f"#task-{task['task_id']}").get_by_role("link", name="Timeline").click()
    await page.wait_for_url(f"**/enrollments/{task['enrollment_id']}")
    await page.get_by_role("heading", name="Timeline of 박서준").wait_for()
    await page.get_by_text("Step 2 due: a call task for the owner", exact=True).wait_for()
    cause = page.get_by_role("link", name="because of: Email step 1 done")
    await cause.first.click()
    assert page.url.endswith("#e-" + (await cause.first.get_attribute("href"))[3:])
    await assert_accessible(page, "timeline")
    await screenshot(page, "timeline")

    await page.get_by_role("link", name="Stop", exact=True).click()
    await page.get_by_role("heading", name="Stop 박서준 in 견적 후 전화?").wait_for()
    await assert_accessible(page, "timeline: confirm stop")
    await screenshot(page, "timeline-confirm-stop")


async def test_settings_pages_and_the_profile_switch_to_korean(stack, signed_in_page):
    page = signed_in_page
    for path, heading, name in (("/settings", "Settings", "settings"),
                                ("/settings/users", "Users and invites", "settings-users"),
                                ("/settings/webhooks", "Webhooks", "settings-webhooks"),
                                ("/settings/mailboxes", "Mailbox health", "settings-mailboxes"),
                                ("/settings/profile", "Profile", "settings-profile")):
        await page.goto(f"{stack.gateway_url}{path}")
        await page.get_by_role("heading", name=heading, exact=True).wait_for()
        await assert_accessible(page, name)
        await screenshot(page, name)

    # a key is shown once, with a copy button (Alpine shows it; without script it stays hidden)
    await page.goto(f"{stack.gateway_url}/settings/api-keys")
    await page.get_by_label("What it is for").fill("CRM sync")
    await page.get_by_role("button", name="Make a key").click()
    await page.get_by_text("it is not shown again").wait_for()
    assert (await page.locator("#new-key").input_value()).startswith("sqk_")
    await page.get_by_role("button", name="Copy").wait_for()
    await assert_accessible(page, "settings: API key shown once")
    await screenshot(page, "settings-api-keys")

    # the profile's language, with the keyboard
    await page.goto(f"{stack.gateway_url}/settings/profile")
    await page.locator("#f-language").select_option("ko")
    await page.locator("#f-timezone").fill("Asia/Seoul")
    await page.get_by_role("button", name="Save", exact=True).click()
    await page.get_by_role("heading", name="프로필", exact=True).wait_for()
    try:
        assert await page.locator("html").get_attribute("lang") == "ko"
        await page.get_by_text("프로필을 저장했습니다.").wait_for()
        await assert_accessible(page, "profile (ko)")
        await screenshot(page, "settings-profile-ko")
        await page.goto(f"{stack.gateway_url}/tasks?which=all&whose=everyone")
        await page.get_by_role("heading", name="업무", exact=True).wait_for()
        await assert_accessible(page, "tasks (ko)")
        await screenshot(page, "tasks-ko")
        timeline = page.get_by_role("link", name="타임라인").first
        await timeline.click()
        await page.get_by_role("heading", name="지금까지 있었던 일").wait_for()
        await page.get_by_text("원인:").first.wait_for()
        await assert_accessible(page, "timeline (ko)")
        await screenshot(page, "timeline-ko")
    finally:
        await page.goto(f"{stack.gateway_url}/settings/profile")
        await page.locator("#f-language").select_option("auto")
        await page.locator("#f-timezone").fill("UTC")
        await page.get_by_role("button", name="저장", exact=True).click()
        await page.get_by_role("heading", name="Profile", exact=True).wait_for()


async def test_the_suppression_list_is_kept_in_settings(stack, signed_in_page):
    page = signed_in_page
    await page.goto(f"{stack.gateway_url}/settings/suppressions")
    await page.get_by_role("heading", name="Suppression list", exact=True).wait_for()
    await page.get_by_label("Address or domain").fill("competitor.example")
    await page.get_by_label("Note (optional)").fill("a competitor")
    await page.get_by_role("button", name="Add to the list").click()
    await page.get_by_text("Added to the suppression list.").wait_for()
    await page.get_by_text("competitor.example", exact=True).wait_for()
    await assert_accessible(page, "settings: suppression list")
    await screenshot(page, "settings-suppressions")

    await page.get_by_role("link", name="Remove competitor.example").click()
    await page.get_by_role("heading",
                           name="Take competitor.example off the suppression list?").wait_for()
    await assert_accessible(page, "settings: confirm removing a suppression")
    await page.get_by_role("button", name="Remove", exact=True).click()
    await page.get_by_text("The list is empty").wait_for()
