"""Tasks, the enrollment timeline and Settings in the web app, against the running system: a
call task completed with a note moves its enrollment on; a timeline in words (English and
Korean) with its causes, stop and retry; invites, API keys, webhooks, mailbox health, the
profile and the password; and the safety around them (another workspace's ids, escaping,
CSRF, the sign-in rate limit, where a signed-out request goes)."""

from __future__ import annotations

import re
import uuid
from urllib.parse import unquote

import httpx
import pytest

from tests.e2e.test_flow import SEQUENCE, new_contact
from tests.e2e.test_web_app import anonymous, main_of
from tests.support import (create_workspace, csrf_token_in, drop_reply, eventually,
                           web_client)

SCRIPT = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
HTMX = {"HX-Request": "true"}


@pytest.fixture(scope="module")
def rival(stack) -> dict:
    return create_workspace(stack, "Rival Co", "rival@rival.example")


def field_error(page: str, field: str) -> str:
    """The message shown under a field (`field()` of _macros.html)."""
    found = re.search(rf'id="f-{field}-error"[^>]*>([^<]*)<', page)
    assert found, f"no error element for {field}"
    return found.group(1).strip()


def shown_once(page: str, element_id: str) -> str:
    found = re.search(rf'<input id="{element_id}" type="text" readonly value="([^"]+)"', page)
    assert found, f"no {element_id} on the page"
    return found.group(1)


async def enrolled(api, steps: list[dict], **contact) -> tuple[str, str]:
    """A sequence of these steps with a contact enrolled: (sequence id, enrollment id)."""
    created = await api.post("/v1/sequences", json={**SEQUENCE, "steps": steps})
    assert created.status_code == 201, created.text
    sequence_id = created.json()["id"]
    contact_id, _ = await new_contact(api, **contact)
    enrollment = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                                json={"contact_id": contact_id})
    assert enrollment.status_code == 201, enrollment.text
    return sequence_id, enrollment.json()["id"]


async def status_becomes(api, enrollment_id: str, status: str) -> dict:
    async def check():
        view = (await api.get(f"/v1/enrollments/{enrollment_id}")).json()
        return view if view["status"] == status else None
    return await eventually(check, timeout=30)


EMAIL_THEN_CALL = [
    {"channel": "email", "subject": "{{고객명}}님, 견적 건", "wait_days": 0, "body": "안녕하세요"},
    {"channel": "call", "wait_days": 0, "body": "{{고객명}}님께 전화: {{회사명}} 견적 확인"},
]


# --- tasks --------------------------------------------------------------------------------------


async def test_a_call_task_is_completed_with_a_note_and_the_enrollment_moves_on(stack, api):
    owner = f"박지민-{uuid.uuid4().hex[:4]}"
    sequence_id, enrollment_id = await enrolled(api, EMAIL_THEN_CALL, name=SCRIPT,
                                                owner_name=owner)

    async def task():
        items = (await api.get("/v1/tasks", params={"owner": owner})).json()["items"]
        return items[0] if items else None

    found = await eventually(task, timeout=30)
    async with web_client(stack) as browser:
        page = main_of((await browser.get("/tasks?whose=everyone")).text)
        assert SCRIPT not in page and ESCAPED in page
        assert f'href="/contacts/{found["contact_id"]}"' in page
        assert f'href="/sequences/{sequence_id}"' in page
        assert f"{ESCAPED}님께 전화: 한빛상사 견적 확인" in page  # the instructions, merged
        assert f'href="/enrollments/{enrollment_id}"' in page

        # mine: the contact's owner name is the user's name
        await browser.post("/settings/profile", data={
            "csrf_token": browser.csrf, "name": owner, "language": "en", "timezone": "UTC"})
        try:
            assert found["task_id"] in (await browser.get("/tasks")).text
        finally:
            await browser.post("/settings/profile", data={
                "csrf_token": browser.csrf, "name": "You", "language": "auto",
                "timezone": "UTC"})
        assert found["task_id"] not in (await browser.get("/tasks?whose=mine")).text

        answer = await browser.post(f"/tasks/{found['task_id']}/complete", headers=HTMX, data={
            "csrf_token": browser.csrf, "outcome": "done", "note": "통화함: <b>다음 주</b> 회신",
            "which": "due", "whose": "everyone"})
        assert answer.status_code == 200
        assert "<main" not in answer.text  # the list only, swapped in place
        row = answer.text[answer.text.index(f'id="task-{found["task_id"]}"'):]
        row = row[:row.index("</li>")]
        assert "Done" in row and "통화함: &lt;b&gt;다음 주&lt;/b&gt; 회신" in row
        assert "<form" not in row
        assert "data-focus-after-swap" in answer.text  # the keyboard goes on from here

        view = await status_becomes(api, enrollment_id, "done")
        assert view["current_step"] == 2
        # the task and its note are part of the enrollment's story, escaped
        timeline = main_of((await browser.get(f"/enrollments/{enrollment_id}")).text)
        assert f"A call task for {owner}" in timeline
        assert "Task done: “통화함: &lt;b&gt;다음 주&lt;/b&gt; 회신”" in timeline

        # completed twice: said so, nothing changes
        again = await browser.post(f"/tasks/{found['task_id']}/complete", data={
            "csrf_token": browser.csrf, "outcome": "skipped"})
        assert again.status_code == 409 and "completed already" in again.text
        timeline = main_of((await browser.get(f"/enrollments/{enrollment_id}")).text)
        assert "Call step 2 done" in timeline and "Done: every step ran" in timeline


async def test_the_task_list_says_what_to_do_when_empty_and_asks_for_a_name(stack):
    async with web_client(stack) as browser:
        await browser.post("/settings/profile", data={
            "csrf_token": browser.csrf, "name": "", "language": "auto", "timezone": "UTC"})
        try:
            page = main_of((await browser.get("/tasks?which=overdue")).text)
        finally:
            await browser.post("/settings/profile", data={
                "csrf_token": browser.csrf, "name": "You", "language": "auto",
                "timezone": "UTC"})
        assert "No tasks due." in page
        assert "SMS and call steps of your sequences appear here when due." in page
        assert "matched to people by the owner name on contacts" in page
        assert 'href="/settings/profile"' in page


async def test_a_signed_out_request_for_tasks_goes_to_sign_in(stack):
    async with anonymous(stack) as browser:
        answer = await browser.get("/tasks")
        assert answer.status_code == 303
        assert unquote(answer.headers["location"]) == "/sign-in?next=/tasks"


# --- the timeline -------------------------------------------------------------------------------


HELD_SECOND = [
    {"channel": "email", "subject": "견적 건", "wait_days": 0, "body": "{{고객명}}님 안녕하세요"},
    {"channel": "email", "wait_days": 0, "body": "{{직함}}님, 검토해 보셨을까요?"},
]


async def test_the_timeline_tells_why_in_words_in_english_and_korean(stack, api):
    sequence_id, enrollment_id = await enrolled(api, HELD_SECOND, name=SCRIPT)
    view = await status_becomes(api, enrollment_id, "needs_attention")
    email = view["contact_email"]
    async with web_client(stack) as browser:
        page = main_of((await browser.get(f"/enrollments/{enrollment_id}")).text)
        assert SCRIPT not in page and ESCAPED in page
        assert "Needs attention" in page and "Step 2 of 2" in page
        assert f"Email step 1 sent to {email} (견적 건)" in page
        assert "Held: {{직함}} is empty for this contact" in page
        assert "because of: Step 1 due: an email" in page
        assert f'href="/contacts/{view["contact_id"]}"' in page
        assert f'href="/sequences/{sequence_id}"' in page
        assert "Asia/Seoul" in page  # moments in the sequence's zone too
        causes = re.findall(r'<a href="#e-([0-9a-f-]+)">because of', page)
        assert causes and all(f'id="e-{cause}"' in page for cause in causes)
        assert f'action="/enrollments/{enrollment_id}/retry"' in page

    async with web_client(stack, language="ko-KR,ko;q=0.9") as korean:
        page = main_of((await korean.get(f"/enrollments/{enrollment_id}")).text)
        assert f"이메일 1단계를 {email}에게 보냄 (견적 건)" in page
        assert "보류: 이 연락처의 {{직함}} 값이 비어 있습니다" in page
        assert "원인: 1단계 시작: 이메일" in page
        assert "확인 필요" in page  # the status badge too

        # stop asks first, then stops
        confirm = await korean.get(f"/enrollments/{enrollment_id}/stop")
        assert confirm.status_code == 200 and "되돌릴 수 없습니다" in confirm.text
        assert (await api.get(f"/v1/enrollments/{enrollment_id}")).json()["status"] \
            == "needs_attention"
        stopped = await korean.post(f"/enrollments/{enrollment_id}/stop", data={
            "csrf_token": korean.csrf, "reason": "고객 요청"})
        assert stopped.status_code == 303
    await status_becomes(api, enrollment_id, "stopped")
    async with web_client(stack) as browser:
        page = main_of((await browser.get(f"/enrollments/{enrollment_id}")).text)
        assert "Stopped: 고객 요청" in page
        assert f"/enrollments/{enrollment_id}/stop" not in page  # nothing left to stop


async def test_a_reply_shows_in_the_timeline_as_what_stopped_the_enrollment(stack, api):
    _, enrollment_id = await enrolled(api, HELD_SECOND)

    async def sent():
        entries = (await api.get(f"/v1/enrollments/{enrollment_id}/timeline")).json()["entries"]
        return next((e for e in entries if e["type"] == "EmailSent"), None)

    email = await eventually(sent, timeout=30)
    await drop_reply(stack, email["data"]["message_id"], "네, 다음 주에 통화해요")
    await status_becomes(api, enrollment_id, "replied")
    async with web_client(stack) as browser:
        page = main_of((await browser.get(f"/enrollments/{enrollment_id}")).text)
        assert "“네, 다음 주에 통화해요" in page
        assert "Replied — the enrollment stopped" in page
        assert "because of: Reply from" in page


async def test_retry_tries_the_held_step_again(stack, api):
    _, enrollment_id = await enrolled(api, HELD_SECOND)
    await status_becomes(api, enrollment_id, "needs_attention")
    async with web_client(stack) as browser:
        answer = await browser.post(f"/enrollments/{enrollment_id}/retry",
                                    data={"csrf_token": browser.csrf})
        assert answer.status_code == 303

        async def retried():
            page = (await browser.get(f"/enrollments/{enrollment_id}")).text
            return "The held step was tried again" in page

        await eventually(retried, timeout=30)


async def test_another_workspaces_enrollment_and_task_are_not_found(stack, api, rival):
    _, enrollment_id = await enrolled(api, HELD_SECOND)
    async with web_client(stack, rival["user_email"], rival["password"]) as theirs:
        page = await theirs.get(f"/enrollments/{enrollment_id}")
        unknown = await theirs.get(f"/enrollments/{uuid.uuid4()}")
        malformed = await theirs.get("/enrollments/not-an-id")
        assert page.status_code == unknown.status_code == malformed.status_code == 404
        assert main_of(page.text) == main_of(unknown.text)
        assert (await theirs.get(f"/enrollments/{enrollment_id}/stop")).status_code == 404
        stop = await theirs.post(f"/enrollments/{enrollment_id}/stop",
                                 data={"csrf_token": theirs.csrf})
        assert stop.status_code == 404
    assert (await api.get(f"/v1/enrollments/{enrollment_id}")).json()["status"] != "stopped"


async def test_a_post_without_its_csrf_token_is_refused(stack, api):
    _, enrollment_id = await enrolled(api, HELD_SECOND)
    async with web_client(stack) as browser:
        for path, data in ((f"/enrollments/{enrollment_id}/stop", {}),
                           ("/settings/api-keys", {"name": "no token"}),
                           ("/settings/users/invite", {"email": "x@example.com"}),
                           ("/settings/profile", {"name": "Mallory"}),
                           (f"/tasks/{uuid.uuid4()}/complete", {"outcome": "done"})):
            answer = await browser.post(path, data=data)
            assert answer.status_code == 403, path
            wrong = await browser.post(path, data={**data, "csrf_token": "not-the-token"})
            assert wrong.status_code == 403, path
        keys = (await browser.get("/settings/api-keys")).text
        assert "no token" not in keys
    assert (await api.get(f"/v1/enrollments/{enrollment_id}")).json()["status"] != "stopped"


# --- settings -----------------------------------------------------------------------------------


async def test_an_invited_colleague_joins_and_a_member_cannot_invite(stack):
    email = f"new.{uuid.uuid4().hex[:6]}@hanbit.example"
    async with web_client(stack) as admin:
        bad = await admin.post("/settings/users/invite", data={
            "csrf_token": admin.csrf, "email": "not an address", "name": "X"})
        assert bad.status_code == 422 and "Enter an email address" in field_error(bad.text,
                                                                                  "email")
        made = await admin.post("/settings/users/invite", data={
            "csrf_token": admin.csrf, "email": email, "name": "김신입", "role": "member"})
        assert made.status_code == 201
        link = shown_once(made.text, "invite-link")
        assert link.startswith(f"{stack.gateway_url}/invite/")
        assert "it is not shown again" in made.text
        listed = (await admin.get("/settings/users")).text
        assert email in listed and link not in listed  # pending, and the link shown once only
        taken = await admin.post("/settings/users/invite", data={
            "csrf_token": admin.csrf, "email": stack.workspace["user_email"]})
        assert taken.status_code == 409
        assert "has a user with this email" in field_error(taken.text, "email")

    async with anonymous(stack) as invitee:
        path = link.removeprefix(stack.gateway_url)
        form = await invitee.get(path)
        joined = await invitee.post(path, data={
            "csrf_token": csrf_token_in(form.text), "password": "a long new password",
            "repeat": "a long new password"})
        assert joined.status_code == 303
        users = await invitee.get("/settings/users")
        assert users.status_code == 200 and "김신입" in users.text
        assert "Invite a colleague" not in users.text
        refused = await invitee.post("/settings/users/invite", data={
            "csrf_token": csrf_token_in(users.text), "email": "other@hanbit.example"})
        assert refused.status_code == 403 and "needs an admin" in refused.text
        assert (await invitee.get(path)).status_code == 404  # the link worked once

    async with web_client(stack) as admin:
        page = (await admin.get("/settings/users")).text
        row = page[page.index(email) - 300:page.index(email) + 200]
        assert "김신입" in row and "member" in row


async def test_an_api_key_is_shown_once_works_and_stops_when_revoked(stack):
    async with web_client(stack) as browser:
        made = await browser.post("/settings/api-keys", data={"csrf_token": browser.csrf,
                                                               "name": f"CRM {SCRIPT}"})
        assert made.status_code == 201 and SCRIPT not in made.text
        key = shown_once(made.text, "new-key")
        assert "it is not shown again" in made.text
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30,
                                     headers={"Authorization": f"Bearer {key}"}) as other:
            assert (await other.get("/v1/me")).status_code == 200
            listed = (await browser.get("/settings/api-keys")).text
            assert key not in listed and key[:12] in listed
            key_id = re.search(rf"{re.escape(key[:12])}.*?/settings/api-keys/([0-9a-f-]+)/revoke",
                               listed, re.S).group(1)
            confirm = await browser.get(f"/settings/api-keys/{key_id}/revoke")
            assert "This cannot be undone." in confirm.text
            assert (await other.get("/v1/me")).status_code == 200
            revoked = await browser.post(f"/settings/api-keys/{key_id}/revoke",
                                         data={"csrf_token": browser.csrf})
            assert revoked.status_code == 303
            assert (await other.get("/v1/me")).status_code == 401
        assert "revoked" in (await browser.get("/settings/api-keys")).text
        empty = await browser.post("/settings/api-keys", data={"csrf_token": browser.csrf,
                                                                "name": ""})
        assert empty.status_code == 422 and field_error(empty.text, "name")


async def test_webhooks_refuse_http_and_show_their_delivery_log(stack, api):
    async with web_client(stack) as browser:
        plain = await browser.post("/settings/webhooks", data={
            "csrf_token": browser.csrf, "url": "http://hooks.example/x", "event_types": "*"})
        assert plain.status_code == 422
        assert "https" in field_error(plain.text, "url")
        assert 'value="http://hooks.example/x"' in plain.text  # what was typed stays

        made = await browser.post("/settings/webhooks", data={
            "csrf_token": browser.csrf, "url": "https://127.0.0.1:9/nobody-listens",
            "event_types": ["ContactEnrolled", "EnrollmentReplied"]})
        assert made.status_code == 201
        assert shown_once(made.text, "new-secret")
        webhook_id = re.search(r'/settings/webhooks/([0-9a-f-]+)"', made.text).group(1)

        await enrolled(api, HELD_SECOND)

        async def delivery():
            items = (await api.get(f"/v1/webhooks/{webhook_id}/deliveries")).json()["items"]
            return items[0] if items else None

        found = await eventually(delivery, timeout=30)
        log = main_of((await browser.get(f"/settings/webhooks/{webhook_id}")).text)
        assert "ContactEnrolled" in log and found["delivery_id"] in log
        assert (await browser.get(f"/settings/webhooks/{webhook_id}?state=delivered")).status_code \
            == 200
        again = await browser.post(
            f"/settings/webhooks/{webhook_id}/deliveries/{found['delivery_id']}/redeliver",
            data={"csrf_token": browser.csrf})
        assert again.status_code == 303

        await _rotates_the_secret(stack, browser, webhook_id, shown_once(made.text, "new-secret"))

        confirm = await browser.get(f"/settings/webhooks/{webhook_id}/delete")
        assert "This cannot be undone." in confirm.text
        deleted = await browser.post(f"/settings/webhooks/{webhook_id}/delete",
                                     data={"csrf_token": browser.csrf})
        assert deleted.status_code == 303
        assert (await api.get(f"/v1/webhooks/{webhook_id}")).json()["active"] is False


async def _rotates_the_secret(stack, browser, webhook_id: str, secret: str) -> None:
    """Rotate secret: asked first, the new secret shown once in whsec form, the old one's grace
    period shown in the list, a second rotation refused meanwhile (in Korean too)."""
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", secret)
    confirm = await browser.get(f"/settings/webhooks/{webhook_id}/rotate")
    assert confirm.status_code == 200 and "24 hours" in confirm.text
    assert f'action="/settings/webhooks/{webhook_id}/rotate"' in confirm.text
    rotated = await browser.post(f"/settings/webhooks/{webhook_id}/rotate",
                                 data={"csrf_token": browser.csrf})
    assert rotated.status_code == 201
    new = shown_once(rotated.text, "new-secret")
    assert new != secret and new.startswith("whsec_")
    listed = main_of((await browser.get("/settings/webhooks")).text)
    assert "Previous secret signs too until" in listed and new not in listed
    assert f"/settings/webhooks/{webhook_id}/rotate" not in listed  # one rotation at a time
    again = await browser.post(f"/settings/webhooks/{webhook_id}/rotate",
                               data={"csrf_token": browser.csrf})
    assert again.status_code == 409 and "already running" in again.text
    async with web_client(stack, language="ko-KR,ko;q=0.9") as korean:
        confirm = await korean.get(f"/settings/webhooks/{webhook_id}/rotate")
        assert "서명 비밀값을 교체할까요?" in confirm.text
        listed = await korean.get("/settings/webhooks")
        assert "이전 비밀값도 함께 서명" in listed.text


async def test_mailbox_health_shows_the_sender_mailboxes(stack, api):
    await api.post("/v1/sequences", json=SEQUENCE)  # a sender address to read
    async with web_client(stack) as browser:
        page = main_of((await browser.get("/settings/mailboxes")).text)
        assert "Mailbox health" in page
        assert "healthy" in page or "failing" in page
        assert "polling" in page or "IMAP IDLE" in page


async def test_the_profile_switches_the_language_and_checks_the_timezone(stack):
    async with web_client(stack) as browser:
        bad = await browser.post("/settings/profile", data={
            "csrf_token": browser.csrf, "name": "You", "language": "en",
            "timezone": "Mars/Olympus"})
        assert bad.status_code == 422 and "IANA" in field_error(bad.text, "timezone")
        assert '<datalist id="zones">' in bad.text and '<option value="Asia/Seoul">' in bad.text
        saved = await browser.post("/settings/profile", data={
            "csrf_token": browser.csrf, "name": "You", "language": "ko",
            "timezone": "Asia/Seoul"})
        assert saved.status_code == 303
        try:
            tasks = (await browser.get("/tasks")).text
            assert '<html lang="ko">' in tasks and "업무" in tasks
            assert "설정" in (await browser.get("/settings")).text
        finally:
            await browser.post("/settings/profile", data={
                "csrf_token": browser.csrf, "name": "You", "language": "auto",
                "timezone": "UTC"})
        assert '<html lang="en">' in (await browser.get("/tasks")).text


async def test_a_new_password_ends_the_other_sessions_and_keeps_this_one(stack):
    person = create_workspace(stack, "Password Co", f"pw.{uuid.uuid4().hex[:6]}@pw.example")
    async with web_client(stack, person["user_email"], person["password"]) as here, \
            web_client(stack, person["user_email"], person["password"]) as elsewhere:
        wrong = await here.post("/settings/profile/password", data={
            "csrf_token": here.csrf, "current": "not it at all", "new": "a brand new password",
            "repeat": "a brand new password"})
        assert wrong.status_code == 422
        assert "not your current password" in field_error(wrong.text, "current")
        differ = await here.post("/settings/profile/password", data={
            "csrf_token": here.csrf, "current": person["password"],
            "new": "a brand new password", "repeat": "another one entirely"})
        assert differ.status_code == 422 and field_error(differ.text, "repeat")
        changed = await here.post("/settings/profile/password", data={
            "csrf_token": here.csrf, "current": person["password"],
            "new": "a brand new password", "repeat": "a brand new password"})
        assert changed.status_code == 303
        assert (await here.get("/settings/profile")).status_code == 200  # a new session
        assert (await elsewhere.get("/settings/profile")).status_code == 303  # ended
    async with web_client(stack, person["user_email"], "a brand new password") as again:
        assert (await again.get("/tasks")).status_code == 200


async def test_six_wrong_passwords_lock_the_address_for_the_window(stack):
    person = create_workspace(stack, "Limit Co", f"limit.{uuid.uuid4().hex[:6]}@limit.example")
    async with anonymous(stack) as browser:
        async def attempt(password: str) -> httpx.Response:
            form = await browser.get("/sign-in")
            return await browser.post("/sign-in", data={
                "email": person["user_email"], "password": password,
                "csrf_token": csrf_token_in(form.text)})

        answers = [await attempt(f"wrong password {n}") for n in range(6)]
        assert [a.status_code for a in answers] == [422] * 5 + [429]
        assert "Too many attempts. Wait 15 minutes and try again." in answers[-1].text
        right = await attempt(person["password"])
        assert right.status_code == 429 and "seq_session" not in right.headers.get(
            "set-cookie", "")
        assert (await browser.get("/tasks")).status_code == 303
