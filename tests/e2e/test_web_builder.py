"""The sequence builder against the running system: building a sequence through the form (its
buttons post to the server, which rebuilds the steps), field errors next to their field with
nothing saved, editing a live sequence, Preview with a chosen contact, Send test to me, another
workspace's ids, escaping, CSRF, and Korean."""

from __future__ import annotations

import html
import re
import uuid

import pytest

from tests.e2e.test_flow import SEQUENCE, mail_to, new_contact
from tests.e2e.test_web_app import SCRIPT, main_of
from tests.support import create_workspace, eventually, web_client

KOREAN_REQUIRED = "필수 항목입니다."  # the catalog's "This field is required."


@pytest.fixture(scope="module")
def other(stack) -> dict:
    return create_workspace(stack, "Builder Rival", "rival@builder-rival.example")


def error_of(page: str, field: str) -> str:
    """The message shown under a field (`steps[0].body`), as text."""
    slug = "f-" + field.replace("[", "-").replace("]", "").replace(".", "-")
    found = re.search(rf'<p class="error" id="{re.escape(slug)}-error"[^>]*>([^<]*)</p>', page)
    assert found, f"no error paragraph for {field}"
    return html.unescape(found.group(1)).strip()


def values_of(page: str) -> dict[str, str]:
    """What the form shows in each field (inputs, selected options, textareas), by name."""
    fields = {}
    for name, value in re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page):
        fields[html.unescape(name)] = html.unescape(value)
    for name, value in re.findall(r'<textarea[^>]*name="([^"]+)"[^>]*>([^<]*)</textarea>', page):
        fields[html.unescape(name)] = html.unescape(value)
    for name, options in re.findall(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', page,
                                    re.S):
        chosen = re.search(r'<option value="([^"]*)" selected', options)
        if chosen:
            fields[html.unescape(name)] = chosen.group(1)
    for name, value in re.findall(
            r'<input type="radio"[^>]*name="([^"]+)" value="([^"]*)" checked', page):
        fields[html.unescape(name)] = value
    fields.pop("csrf_token", None)
    return fields


def new_form(name: str) -> dict[str, str]:
    return {"name": name, "purpose": "quote follow-up", "sender_name": "이영희",
            "sender_email": "younghee@sales.example", "timezone": "Asia/Seoul",
            "language": "ko", "send_policy.mode": "send_time", "send_policy.send_time": "09:30",
            "steps[0].channel": "email", "steps[0].subject": "{{고객명}}님, 견적 건",
            "steps[0].body": "안녕하세요 {{foo}}님", "steps[0].wait_days": "0"}


async def post(browser, url: str, fields: dict, action: str, **kwargs):
    return await browser.post(url, data={**fields, "csrf_token": browser.csrf, "action": action},
                              **kwargs)


async def sequence_named(api, name: str) -> dict | None:
    page = (await api.get("/v1/sequences", params={"limit": 500})).json()
    return next((s for s in page["items"] if s["name"] == name), None)


async def test_a_two_step_sequence_is_built_through_the_form_meeting_field_errors(stack, api):
    name = f"Builder {uuid.uuid4().hex[:6]}"
    async with web_client(stack) as browser:
        blank = await browser.get("/sequences/new")
        assert blank.status_code == 200
        assert 'name="steps[0].body"' in blank.text and '<datalist id="timezones">' in blank.text
        assert '<option value="Asia/Seoul">' in blank.text

        # an unknown variable: refused next to the field, with its position; nothing saved
        fields = new_form(name)
        refused = await post(browser, "/sequences/new", fields, "save")
        assert refused.status_code == 422
        assert error_of(refused.text, "steps[0].body") == (
            "Unknown variable {{foo}} at position 6: use {{고객명}}, {{회사명}}, {{직함}} or"
            " {{담당자명}}.")
        assert 'aria-invalid="true"' in refused.text
        assert values_of(refused.text)["steps[0].body"] == "안녕하세요 {{foo}}님"  # as typed
        assert await sequence_named(api, name) is None
        assert name not in (await browser.get("/campaigns")).text

        # add a step; the form comes back with what was typed and a new blank step
        fields["steps[0].body"] = "안녕하세요 {{고객명|고객}}님, {{회사명}} 견적 관련입니다."
        added = await post(browser, "/sequences/new", fields, "add_step")
        assert added.status_code == 200
        shown = values_of(added.text)
        assert shown["steps[0].body"] == fields["steps[0].body"]
        assert shown["steps[1].channel"] == "email" and shown["steps[1].wait_days"] == "2"
        assert 'id="f-steps-1-channel"' in added.text and "autofocus" in added.text
        fields = {**shown, "steps[1].channel": "call", "steps[1].body": "{{고객명}}님께 전화",
                  "steps[1].wait_days": "3"}

        # move the call up, then back down: each step keeps what was typed in it
        moved = values_of((await post(browser, "/sequences/new", fields, "up:1")).text)
        assert moved["steps[0].channel"] == "call" and moved["steps[1].channel"] == "email"
        assert moved["steps[1].subject"] == "{{고객명}}님, 견적 건"
        back = values_of((await post(browser, "/sequences/new", moved, "down:0")).text)
        assert back["steps[0].channel"] == "email" and back["steps[1].channel"] == "call"

        # a third step, removed again
        three = values_of((await post(browser, "/sequences/new", back, "add_step")).text)
        assert "steps[2].body" in three
        two = values_of((await post(browser, "/sequences/new", three, "remove:2")).text)
        assert "steps[2].body" not in two and two == back

        # the first email step needs a subject: said under that subject
        no_subject = await post(browser, "/sequences/new", {**two, "steps[0].subject": ""},
                                "save")
        assert no_subject.status_code == 422
        assert error_of(no_subject.text, "steps[0].subject") == (
            "The first email step needs a subject: it starts the email thread.")
        assert await sequence_named(api, name) is None

        saved = await post(browser, "/sequences/new", two, "save")
        assert saved.status_code == 303, main_of(saved.text)
        sequence_id = saved.headers["location"].removeprefix("/sequences/")
    sequence = (await api.get(f"/v1/sequences/{sequence_id}")).json()
    assert sequence["name"] == name and sequence["state"] == "live"
    assert sequence["send_policy"] == {"mode": "send_time", "send_time": "09:30"}
    assert sequence["language"] == "ko" and sequence["timezone"] == "Asia/Seoul"
    assert [(s["channel"], s["subject"], s["wait_days"]) for s in sequence["steps"]] == [
        ("email", "{{고객명}}님, 견적 건", 0), ("call", None, 3)]


async def test_settings_errors_in_korean_and_as_soon_as_due(stack, api):
    name = f"빌더 {uuid.uuid4().hex[:6]}"
    fields = {**new_form(name), "steps[0].body": "본문", "timezone": "Mars/Olympus",
              "sender_email": "not an address", "send_policy.send_time": ""}
    async with web_client(stack, language="ko-KR,ko;q=0.9") as browser:
        refused = await post(browser, "/sequences/new", fields, "save")
        assert refused.status_code == 422 and '<html lang="ko">' in refused.text
        assert error_of(refused.text, "timezone") == (
            "알 수 없는 시간대입니다. 목록에서 고르세요 (예: Asia/Seoul).")
        assert error_of(refused.text, "sender_email") == "이메일 주소를 입력하세요."
        assert error_of(refused.text, "send_policy.send_time") == (
            "발송 시각을 입력하거나 “예정 시각이 되는 즉시”를 고르세요.")
        assert "단계 추가" in refused.text and "저장하고 시작" in refused.text
        empty = await post(browser, "/sequences/new", {**fields, "name": ""}, "save")
        assert error_of(empty.text, "name") == KOREAN_REQUIRED

        # an SMS step's subject field (hidden by script) is not sent; as soon as due
        fine = {**fields, "timezone": "Europe/Berlin", "sender_email": "sales@sales.example",
                "send_policy.mode": "as_soon_as_due", "send_policy.send_time": "09:30",
                "steps[1].channel": "sms", "steps[1].subject": "ignored",
                "steps[1].body": "문자 보내기", "steps[1].wait_days": "1"}
        saved = await post(browser, "/sequences/new", fine, "save")
        assert saved.status_code == 303, main_of(saved.text)
    sequence = await sequence_named(api, name)
    assert sequence["send_policy"] == {"mode": "as_soon_as_due", "send_time": None}
    assert sequence["steps"][1]["channel"] == "sms" and sequence["steps"][1]["subject"] is None


async def test_with_htmx_the_form_swaps_itself_and_a_save_redirects_the_page(stack, api):
    name = f"Htmx {uuid.uuid4().hex[:6]}"
    htmx = {"HX-Request": "true"}
    async with web_client(stack) as browser:
        added = await post(browser, "/sequences/new", new_form(name), "add_step", headers=htmx)
        assert added.status_code == 200 and added.text.lstrip().startswith("<form")
        assert "<html" not in added.text and 'name="steps[1].body"' in added.text
        refused = await post(browser, "/sequences/new", new_form(name), "save", headers=htmx)
        assert refused.status_code == 422 and refused.text.lstrip().startswith("<form")
        assert 'id="builder-errors"' in refused.text and "data-focus-after-swap" in refused.text
        fine = {**new_form(name), "steps[0].body": "안녕하세요 {{고객명}}님"}
        saved = await post(browser, "/sequences/new", fine, "save", headers=htmx)
        assert saved.status_code == 200
        assert saved.headers["HX-Redirect"].startswith("/sequences/")
    assert await sequence_named(api, name) is not None


async def test_a_post_without_its_csrf_token_is_refused_and_saves_nothing(stack, api):
    name = f"Forged {uuid.uuid4().hex[:6]}"
    fields = {**new_form(name), "steps[0].body": "안녕하세요", "action": "save"}
    async with web_client(stack) as browser:
        refused = await browser.post("/sequences/new", data=fields)
        assert refused.status_code == 403
        other_token = await browser.post("/sequences/new", data={**fields, "csrf_token": "x"})
        assert other_token.status_code == 403
    assert await sequence_named(api, name) is None


async def test_editing_a_live_sequence_with_enrollees_says_what_happens_and_keeps_step_ids(
        stack, api):
    sequence_id = (await api.post("/v1/sequences", json=SEQUENCE)).json()["id"]
    contact_id, _ = await new_contact(api)
    enrolled = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                              json={"contact_id": contact_id})
    assert enrolled.status_code == 201, enrolled.text
    before = (await api.get(f"/v1/sequences/{sequence_id}")).json()["steps"]
    url = f"/sequences/{sequence_id}/edit"
    async with web_client(stack) as browser:
        page = await browser.get(url)
        assert page.status_code == 200
        assert "1 contact is enrolled in this sequence" in page.text
        assert "What already went out is never rewritten" in page.text
        assert 'name="name"' in page.text  # the settings are edited on the same form
        assert SEQUENCE["sender_email"] in page.text
        fields = values_of(page.text)
        assert fields["steps[0].step_id"] == before[0]["step_id"]

        refused = await post(browser, url, {**fields, "steps[1].body": "{{foo}} 어때요"}, "save")
        assert refused.status_code == 422
        assert error_of(refused.text, "steps[1].body").startswith("Unknown variable {{foo}}")
        assert (await api.get(f"/v1/sequences/{sequence_id}")).json()["steps"] == before

        added = values_of((await post(browser, url, fields, "add_step")).text)
        added.update({"steps[2].channel": "call", "steps[2].body": "전화 드리기",
                      "steps[2].wait_days": "4", "steps[1].body": "다시 연락드립니다.",
                      "name": "견적 후속 (수정)"})
        saved = await post(browser, url, added, "save")
        assert saved.status_code == 303 and saved.headers["location"] == f"/sequences/{sequence_id}"
    after = (await api.get(f"/v1/sequences/{sequence_id}")).json()
    assert [s["step_id"] for s in after["steps"][:2]] == [s["step_id"] for s in before]
    assert after["steps"][1]["body"] == "다시 연락드립니다."
    assert after["steps"][2]["channel"] == "call" and after["enrolled"] == 1
    assert after["name"] == "견적 후속 (수정)" and after["timezone"] == SEQUENCE["timezone"]


async def test_preview_for_a_chosen_contact_escapes_it_and_shows_missing_variables(stack, api):
    sequence_id = (await api.post("/v1/sequences", json=SEQUENCE)).json()["id"]
    step_id = (await api.get(f"/v1/sequences/{sequence_id}")).json()["steps"][0]["step_id"]
    contact_id, email = await new_contact(api, name=SCRIPT, company="")
    url = f"/sequences/{sequence_id}/steps/{step_id}"
    async with web_client(stack) as browser:
        edit = await browser.get(f"/sequences/{sequence_id}/edit")
        assert f'href="{url}/preview"' in edit.text

        sample = await browser.get(f"{url}/preview")
        assert sample.status_code == 200
        assert "김민수님, 한빛상사 견적 건" in sample.text and "No value for" not in sample.text
        assert re.search(r'<iframe class="preview-html" sandbox srcdoc="[^"<>]*"', sample.text)

        async def found():  # the contact search: by name, company or email
            answer = await browser.get(f"{url}/preview", params={"q": email})
            return answer.status_code == 200 and contact_id in answer.text

        await eventually(found)

        async def chosen():  # the mailer learns of a new contact a moment after it is saved
            answer = await browser.get(f"{url}/preview", params={"contact_id": contact_id})
            return answer if answer.status_code == 200 else None

        page = await eventually(chosen)
        assert SCRIPT not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "No value for {{회사명}}" in page.text
        # the HTML preview: inside the frame's attribute, escaped twice (the email's own
        # escaping, then the attribute's), never markup of the page
        srcdoc = re.search(r'srcdoc="([^"]*)"', page.text).group(1)
        assert "<" not in srcdoc and "&amp;lt;script&amp;gt;" in srcdoc

        held = await browser.post(f"{url}/test", data={"csrf_token": browser.csrf,
                                                        "contact_id": contact_id})
        assert held.status_code == 422 and "Not sent:" in held.text


async def test_send_test_to_me_lands_in_my_mailbox_and_changes_no_enrollment(stack, api):
    sequence_id = (await api.post("/v1/sequences", json=SEQUENCE)).json()["id"]
    step_id = (await api.get(f"/v1/sequences/{sequence_id}")).json()["steps"][0]["step_id"]
    me = stack.workspace["user_email"]
    url = f"/sequences/{sequence_id}/steps/{step_id}/test"
    already = len(mail_to(stack, me))
    async with web_client(stack) as browser:
        refused = await browser.post(url, data={})
        assert refused.status_code == 403
        sent = await browser.post(url, data={"csrf_token": browser.csrf})
        assert sent.status_code == 200
        assert f"Sent to {me}." in sent.text
        # the builder form may post here as a whole (its "Send test to me" buttons do)
        whole = await browser.post(url, data={"csrf_token": browser.csrf, "action": "x",
                                              "steps[0].body": "ignored"},
                                   headers={"HX-Request": "true"})
        assert whole.status_code == 200 and "<html" not in whole.text

    async def delivered():
        mail = mail_to(stack, me)
        return mail[already:] if len(mail) >= already + 2 else None

    tests = await eventually(delivered)
    assert {m["Subject"] for m in tests} == {"[TEST] 김민수님, 한빛상사 견적 건"}
    assert (await api.get(f"/v1/sequences/{sequence_id}")).json()["enrolled"] == 0


async def test_another_workspaces_sequence_is_the_same_not_found_page(stack, api, other):
    ours = (await api.post("/v1/sequences", json=SEQUENCE)).json()["id"]
    step_id = (await api.get(f"/v1/sequences/{ours}")).json()["steps"][0]["step_id"]
    async with web_client(stack, other["user_email"], other["password"]) as rival:
        theirs = await rival.get(f"/sequences/{ours}/edit")
        unknown = await rival.get(f"/sequences/{uuid.uuid4()}/edit")
        malformed = await rival.get("/sequences/not-an-id/edit")
        assert theirs.status_code == unknown.status_code == malformed.status_code == 404
        assert main_of(theirs.text) == main_of(unknown.text)
        assert SEQUENCE["name"] not in theirs.text
        for answer in (
                await rival.post(f"/sequences/{ours}/edit", data={
                    "csrf_token": rival.csrf, "action": "save", "steps[0].channel": "sms",
                    "steps[0].body": "taken over", "steps[0].wait_days": "0"}),
                await rival.get(f"/sequences/{ours}/steps/{step_id}/preview"),
                await rival.post(f"/sequences/{ours}/steps/{step_id}/test",
                                 data={"csrf_token": rival.csrf})):
            assert answer.status_code == 404
            assert main_of(answer.text) == main_of(unknown.text)
    steps = (await api.get(f"/v1/sequences/{ours}")).json()["steps"]
    assert steps[0]["channel"] == "email"


async def test_what_a_colleagues_reply_does_is_chosen_in_the_builder(stack, api):
    name = f"Colleagues {uuid.uuid4().hex[:6]}"
    async with web_client(stack, language="ko") as browser:
        blank = (await browser.get("/sequences/new")).text
        assert 'name="on_account_reply.action" value="stop" checked' in blank
        fields = {**new_form(name), "steps[0].body": "안녕하세요 {{고객명}}님",
                  "on_account_reply.action": "pause", "on_account_reply.pause_days": "abc"}
        refused = await post(browser, "/sequences/new", fields, "save")
        assert refused.status_code == 422
        assert error_of(refused.text, "on_account_reply") == "1에서 90 사이의 일수를 입력하세요."
        assert await sequence_named(api, name) is None  # nothing saved
        saved = await post(browser, "/sequences/new",
                           {**fields, "on_account_reply.pause_days": "5"}, "save")
        assert saved.status_code in (200, 303), saved.text[:300]
    sequence = await sequence_named(api, name)
    assert sequence["on_account_reply"] == {"action": "pause", "pause_days": 5}


async def test_variants_are_added_refused_and_saved_through_the_form_without_script(stack, api):
    """The A/B buttons post the form like the step buttons: a second variant (A is the step's
    own text), weights refused in Korean next to the variants, then saved; the edit page shows
    both again and a save from it keeps them."""
    name = f"Builder AB {uuid.uuid4().hex[:6]}"
    async with web_client(stack, language="ko") as browser:
        fields = {**new_form(name), "steps[0].body": "안녕하세요 {{고객명}}님 (A)"}
        added = await post(browser, "/sequences/new", fields, "add_variant:0")
        assert added.status_code == 200
        shown = values_of(added.text)
        assert (shown["steps[0].variants[0].weight"], shown["steps[0].variants[1].weight"]) == (
            "50", "50")
        assert shown["steps[0].variants[1].subject"] == "" and "autofocus" in added.text
        fields = {**shown, "steps[0].variants[1].subject": "{{회사명}} 견적 (B)",
                  "steps[0].variants[1].body": "{{고객명}}님, 견적 건입니다 (B)",
                  "steps[0].variants[1].weight": "60"}
        refused = await post(browser, "/sequences/new", fields, "save")
        assert refused.status_code == 422
        assert error_of(refused.text, "steps[0].variants") == "버전별 비중의 합이 100이 되어야 합니다."
        assert await sequence_named(api, name) is None

        fields["steps[0].variants[0].weight"] = "40"
        saved = await post(browser, "/sequences/new", fields, "save")
        assert saved.status_code == 303, saved.text
        sequence_id = saved.headers["location"].rsplit("/", 1)[1]
        [step] = (await api.get(f"/v1/sequences/{sequence_id}")).json()["steps"]
        assert [(v["subject"], v["weight"]) for v in step["variants"]] == [
            ("{{고객명}}님, 견적 건", 40), ("{{회사명}} 견적 (B)", 60)]

        edit = values_of((await browser.get(f"/sequences/{sequence_id}/edit")).text)
        assert edit["steps[0].variants[1].body"] == "{{고객명}}님, 견적 건입니다 (B)"
        again = await post(browser, f"/sequences/{sequence_id}/edit", edit, "save")
        assert again.status_code == 303, again.text
        [kept] = (await api.get(f"/v1/sequences/{sequence_id}")).json()["steps"]
        assert kept["variants"] == step["variants"] and kept["step_id"] == step["step_id"]
