"""The whole story of issue 12 in one real browser, as a new user would walk it: sign in; build
a two-step sequence in the builder, meeting a field error on the way; preview it and send a
test; import a CSV of contacts; enroll them by tag through the Segment tab; a reply dropped into
the dev mailbox and a clock move show up as Replied and Done in the enrollee table without a
reload; complete a call task; read a timeline; switch to Korean and see the same pages in
Korean. Screenshots (story-*) and axe on every page on the way."""

from __future__ import annotations

import uuid

from tests.browser.helpers import assert_accessible, screenshot
from tests.e2e.test_flow import mail_to
from tests.support import drop_reply, eventually

PEOPLE = [("김민수", "minsu"), ("이서연", "seoyeon"), ("박지훈", "jihun")]


async def checked(page, name: str) -> None:
    await assert_accessible(page, name)
    await screenshot(page, f"story-{name}")


async def test_a_new_user_runs_a_whole_sequence_in_the_app(stack, signed_in_page, tmp_path):
    page, base = signed_in_page, stack.gateway_url
    tag = f"story{uuid.uuid4().hex[:6]}"
    domain = f"{tag}.example"

    # --- build a two-step sequence, meeting a field error on the way ---------------------
    await page.get_by_role("link", name="New auto follow-up").first.click()
    await page.wait_for_url(f"{base}/sequences/new")
    await page.get_by_label("Name", exact=True).fill("견적 후속 (story)")
    await page.get_by_label("Sender name").fill("이영희")
    await page.get_by_label("Sender email").fill("younghee@sales.example")
    await page.get_by_label("Timezone", exact=True).fill("Asia/Seoul")
    await page.get_by_label("As soon as due").check()
    await page.locator("#f-steps-0-subject").fill("{{고객명}}님, 견적 건")
    await page.locator("#f-steps-0-body").fill("안녕하세요 {{고객}}님")  # not a variable
    await page.get_by_role("button", name="Save and go live").click()
    body_error = page.locator("#f-steps-0-body-error")
    await page.locator("#builder-errors").wait_for()
    await body_error.wait_for()
    assert "고객" in await body_error.inner_text()
    assert await page.locator("#f-steps-0-body").get_attribute("aria-invalid") == "true"
    await checked(page, "builder-error")
    # mended with the variable button: it inserts {{고객명}} at the cursor
    await page.locator("#f-steps-0-body").fill("안녕하세요 ")
    await page.locator("#f-steps-0-body").press("End")
    await page.get_by_role("group", name="Insert a variable into step 1").get_by_role(
        "button", name="{{고객명}}").click()
    assert "{{고객명}}" in await page.locator("#f-steps-0-body").input_value()
    await page.get_by_role("button", name="+ Add step").click()
    await page.locator("#f-steps-1-body").wait_for()
    await page.locator("#f-steps-1-wait_days").fill("1")
    await page.locator("#f-steps-1-body").fill("{{고객명|고객}}님, 검토해 보셨을까요?")
    await checked(page, "builder")
    await page.get_by_role("button", name="Save and go live").click()
    await page.wait_for_url(lambda url: "/sequences/" in url and "/new" not in url
                            and "/edit" not in url)
    sequence_url = page.url.split("?")[0]
    sequence_id = sequence_url.rsplit("/", 1)[1]

    # --- preview and send test to me ----------------------------------------------------
    await page.goto(f"{sequence_url}/edit")
    await page.get_by_role("link", name="Preview step 1").click()
    await page.get_by_role("heading", name="Preview of step 1").wait_for()
    await checked(page, "preview")
    await page.get_by_role("button", name="Send test to me").click()

    async def test_mail():
        return [m for m in mail_to(stack, stack.workspace["user_email"])
                if "[TEST]" in m["Subject"]]
    assert await eventually(test_mail, timeout=30)

    # --- import a CSV of contacts ----------------------------------------------------------
    csv = tmp_path / "contacts.csv"
    csv.write_text("고객명,회사명,이메일,태그\n" + "".join(
        # each at a company of their own: a reply from a colleague would stop the others
        f"{name},{company},{login}@{domain},{tag}\n"
        for (name, login), company in zip(PEOPLE, ("한빛상사", "가나전자", "다라물산"))),
        encoding="utf-8")
    await page.goto(f"{base}/contacts/import")
    await page.get_by_label("CSV file").set_input_files(str(csv))
    await page.get_by_role("button", name="Upload and check the columns").click()
    await page.get_by_role("heading", name="We found these columns").wait_for()
    await checked(page, "import-mapping")
    await page.get_by_role("button", name="Import", exact=True).click()
    await page.get_by_role("heading", name="Import done").wait_for(timeout=60_000)
    await checked(page, "import-done")

    # --- enroll them by tag through the Segment tab ---------------------------------------------
    await page.goto(f"{base}/sequences/{sequence_id}/enroll?tab=segment")
    await page.get_by_label("Tag").fill(tag)
    await page.get_by_role("button", name="Count who would be enrolled").click()
    enroll = page.get_by_role("button", name="Enroll 3")
    await enroll.wait_for()
    await checked(page, "segment-preview")
    await enroll.click()
    await page.get_by_role("link", name="See the enrollees").click()

    # --- a reply and a clock move, seen without a reload ---------------------------------------
    async def first_emails():
        mails = [mail_to(stack, f"{login}@{domain}") for _, login in PEOPLE]
        return mails if all(mails) else None
    mails = await eventually(first_emails, timeout=60)
    await page.evaluate("window.__notReloaded = true")
    await drop_reply(stack, mails[0][0]["Message-ID"], "네, 검토 후 연락드리겠습니다")
    table = page.locator("#enrollee-rows")
    replied = table.locator("tr", has_text=PEOPLE[0][0])
    await replied.locator(".badge").get_by_text("Replied").wait_for(timeout=30_000)
    await page.get_by_role("button", name="+1 day").click()
    for name, _ in PEOPLE[1:]:
        row = table.locator("tr", has_text=name)
        await row.locator(".badge").get_by_text("Done").wait_for(timeout=60_000)
    assert await page.evaluate("window.__notReloaded") is True
    await checked(page, "enrollees")

    # --- read a timeline ---------------------------------------------------------------------
    await replied.get_by_role("link", name=PEOPLE[0][0]).click()
    await page.get_by_text("Replied").first.wait_for()
    await checked(page, "timeline")

    # --- complete a call task -----------------------------------------------------------------
    async with stack.api_client() as api:
        call = await api.post("/v1/sequences", json={
            "name": "견적 후 전화 (story)", "sender_name": "이영희",
            "sender_email": "younghee@sales.example", "timezone": "Asia/Seoul",
            "send_policy": {"mode": "as_soon_as_due"},
            "steps": [{"channel": "call", "wait_days": 0, "body": "{{고객명}}님께 전화"}]})
        contacts = (await api.get("/v1/contacts", params={"tag": tag})).json()["items"]
        contact = next(c for c in contacts if c["name"] == PEOPLE[1][0])
        await api.post(f"/v1/sequences/{call.json()['id']}/enrollments",
                       json={"contact_id": contact["contact_id"]})
    await page.goto(f"{base}/tasks?whose=everyone")
    task = page.locator("li.task", has_text=PEOPLE[1][0])
    await eventually(lambda: _shows(page, task), timeout=30)
    await task.get_by_role("textbox").fill("통화함: 다음 주 미팅")
    await task.get_by_role("button", name="Done").click()
    await task.locator(".badge").get_by_text("Done").wait_for()
    await checked(page, "task-done")

    # --- the same pages in Korean ----------------------------------------------------------------
    await page.get_by_label("Language").select_option("ko")
    await page.get_by_role("heading", name="업무", exact=True).wait_for()
    for path, heading in ((f"/sequences/{sequence_id}?tab=enrollees", "등록자"),
                          ("/campaigns", "자동 후속"), ("/contacts", "고객")):
        await page.goto(base + path)
        await page.get_by_role("heading", name=heading, exact=True).first.wait_for()
        assert await page.locator("html").get_attribute("lang") == "ko"
    await page.goto(f"{base}/sequences/{sequence_id}?tab=enrollees")
    await page.locator("#enrollee-rows .badge").get_by_text("답장함").wait_for()
    await checked(page, "enrollees-ko")
    await page.get_by_label("언어").select_option("en")


async def _shows(page, task) -> bool:
    if await task.count():
        return True
    await page.reload()
    return False
