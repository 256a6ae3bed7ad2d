"""The mailer end to end: merge values and held steps, previews and test sends, message format
and threading, open tracking, unsubscribe, SMTP bounces and retries, mailbox limits, tasks."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import timedelta

import httpx
import pytest

from sequences import clock
from sequences.devstack.stack import Stack
from sequences.messaging.nats import connect
from tests.e2e.test_flow import SEQUENCE, mail_to, new_contact
from tests.e2e.test_replies import query
from tests.support import eventually, nothing_pending, stack_config

CAPPED = "capped@sales.example"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    mailboxes = [{"address": CAPPED, "daily_cap": 2}]
    env = {"mailer": {"SMTP_RETRY_LIMIT": "3", "MAILBOXES": json.dumps(mailboxes)}}
    with Stack(stack_config(tmp_path_factory, service_env=env)) as running:
        yield running


def steps(*waits, channel="email"):
    made = []
    for i, wait in enumerate(waits):
        step = {"channel": channel if i else "email", "wait_days": wait,
                "body": f"step {i + 1} for {{{{고객명}}}} at {{{{회사명}}}}"}
        if i == 0:
            step["subject"] = "{{고객명}}님께"
        made.append(step)
    return made


async def enroll(api, contact_id, **sequence):
    sequence_id = (await api.post("/v1/sequences", json={**SEQUENCE, **sequence})).json()["id"]
    response = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                              json={"contact_id": contact_id})
    assert response.status_code == 201, response.text
    return sequence_id, response.json()["id"]


async def advance(stack, delta: timedelta) -> None:
    nc = await connect(stack.env()["NATS_URL"], "tests")
    await clock.advance(nc.jetstream(), delta)
    await nc.close()


async def view_when(api, enrollment_id, condition, timeout=30):
    async def check():
        view = (await api.get(f"/v1/enrollments/{enrollment_id}")).json()
        return view if condition(view) else None
    return await eventually(check, timeout=timeout)


async def test_an_empty_merge_value_holds_the_step_until_the_contact_is_fixed(stack, api):
    contact_id, email = await new_contact(api, company="")
    _, enrollment_id = await enroll(api, contact_id)
    view = await view_when(api, enrollment_id, lambda v: v["status"] == "needs_attention")
    assert "{{회사명}}" in view["attention"]
    assert mail_to(stack, email) == []
    await api.patch(f"/v1/contacts/{contact_id}", json={"company": "한빛상사"})
    retried = await api.post(f"/v1/enrollments/{enrollment_id}/retry")
    assert retried.status_code == 200, retried.text
    await view_when(api, enrollment_id, lambda v: v["sends"] == 1)
    [sent] = mail_to(stack, email)
    assert "한빛상사" in sent.get_body(("plain",)).get_content()
    again = await api.post(f"/v1/enrollments/{enrollment_id}/retry")
    assert again.status_code == 409 and again.json()["errors"][0]["field"] == "enrollment_id"


async def test_preview_and_send_test_to_me_change_no_enrollment(stack, api):
    sequence_id = (await api.post("/v1/sequences", json=SEQUENCE)).json()["id"]
    step_id = (await api.get(f"/v1/sequences/{sequence_id}")).json()["steps"][0]["step_id"]
    url = f"/v1/sequences/{sequence_id}/steps/{step_id}"
    sample = (await api.post(f"{url}/preview")).json()
    assert sample["subject"] == "김민수님, 한빛상사 견적 건" and sample["missing"] == []
    contact_id, _ = await new_contact(api, name="", company="<b>Acme</b>")

    async def previewed():  # the mailer learns of a new contact a moment after it is created
        response = await api.post(f"{url}/preview", json={"contact_id": contact_id})
        return response.json() if response.status_code == 200 else None

    chosen = await eventually(previewed)
    assert chosen["missing"] == ["고객명"] and "&lt;b&gt;Acme&lt;/b&gt;" in chosen["html"]

    # a user of the workspace of their own, with a key of their own: the test goes to them
    me = f"me.{uuid.uuid4().hex[:6]}@sales.example"
    user = (await api.post("/v1/users", json={"email": me, "name": "Me"})).json()
    key = (await api.post("/v1/api-keys", json={"name": "mine", "user_id": user["user_id"]}))
    assert key.status_code == 201, key.text
    sent = await api.post(f"{url}/test", headers={"Authorization": f"Bearer {key.json()['key']}"})
    assert sent.status_code == 202, sent.text
    async def delivered():
        return mail_to(stack, me)

    [test] = await eventually(delivered)
    assert test["Subject"] == "[TEST] 김민수님, 한빛상사 견적 건"
    detail = (await api.get(f"/v1/sequences/{sequence_id}")).json()
    assert detail["enrolled"] == 0
    bad = await api.post(f"{url}/test", json={"to": "not-an-address"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "to"
    unknown = await api.post(f"/v1/sequences/{sequence_id}/steps/{uuid.uuid4()}/preview")
    assert unknown.status_code == 404 and unknown.json()["errors"][0]["field"] == "step_id"


async def test_each_email_is_multipart_escaped_threaded_tracked_and_unsubscribable(stack, api):
    contact_id, email = await new_contact(api, name="Kim <script>", company="R&D Co")
    _, enrollment_id = await enroll(api, contact_id, steps=steps(0, 1, 1),
                                    send_policy={"mode": "as_soon_as_due"})
    await view_when(api, enrollment_id, lambda v: v["sends"] == 1)
    for count in (2, 3):
        await advance(stack, timedelta(days=1, minutes=1))
        await view_when(api, enrollment_id, lambda v, n=count: v["sends"] == n)
    first, second, third = mail_to(stack, email)
    assert first.get_content_type() == "multipart/alternative"
    html = first.get_body(("html",)).get_content()
    assert "Kim &lt;script&gt;" in html and "R&amp;D Co" in html and "<script>" not in html
    assert first["Message-ID"].endswith("@sales.example>")
    assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert (second["Subject"], third["Subject"]) == (f"Re: {first['Subject']}",) * 2
    assert third["In-Reply-To"] == second["Message-ID"]
    assert third["References"].split() == [first["Message-ID"], second["Message-ID"]]

    async with httpx.AsyncClient(timeout=10) as client:
        pixel = re.search(r'<img src="([^"]+)"', html)[1]
        for _ in range(2):
            opened = await client.get(pixel)
            assert (opened.status_code, opened.headers["content-type"]) == (200, "image/gif")
        forged = await client.get(pixel.replace(".gif", "x.gif"))
        assert forged.status_code == 404
        view = await view_when(api, enrollment_id, lambda v: v["opens"] == 2)
        assert view["unique_opens"] == 1

        unsubscribe = first["List-Unsubscribe"].strip("<>")
        page = await client.get(unsubscribe)
        assert page.status_code == 200 and "<form" in page.text
        one_click = await client.post(unsubscribe, content="List-Unsubscribe=One-Click",
                                      headers={"content-type": "application/x-www-form-urlencoded"})
        assert one_click.status_code == 200
    assert (await api.get(f"/v1/contacts/{contact_id}")).json()["opted_out"] is True


async def test_unsubscribing_stops_every_enrollment_and_no_email_follows(stack, api):
    contact_id, email = await new_contact(api)
    _, enrollment_id = await enroll(api, contact_id, send_policy={"mode": "as_soon_as_due"})
    await view_when(api, enrollment_id, lambda v: v["sends"] == 1)
    [first] = mail_to(stack, email)
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.post(first["List-Unsubscribe"].strip("<>"))).status_code == 200
    await view_when(api, enrollment_id, lambda v: v["status"] == "stopped")
    await nothing_pending(stack.database_url, enrollment_id)
    await advance(stack, timedelta(days=3))
    await asyncio.sleep(2)
    assert len(mail_to(stack, email)) == 1


async def test_a_refused_recipient_bounces_a_dmarc_refusal_holds_a_greylisted_one_gets_through(
        stack, api):
    bounced_id, _ = await new_contact(api, email=f"bounce.{uuid.uuid4().hex[:6]}@customer.example")
    _, enrollment_id = await enroll(api, bounced_id)
    view = await view_when(api, enrollment_id, lambda v: v["status"] == "bounced")
    assert "550" in view["ended_reason"]
    [found] = await query(stack, "SELECT data->>'kind', data->>'bounce_class', data->>'reason',"
                                 " data->>'rule', data->>'detected_by' FROM eventlog.events WHERE"
                                 " stream_id = :s AND type = 'BounceDetected'",
                          s=f"bounce-{enrollment_id}")  # classified at SMTP time
    assert found == ("hard", "recipient-permanent", "user-unknown", "user-unknown", "smtp")

    # a sender-side refusal: a soft, classified bounce, the step held, the address not blamed
    refused_id, _ = await new_contact(api, email=f"dmarc.{uuid.uuid4().hex[:6]}@customer.example")
    _, held = await enroll(api, refused_id)
    view = await view_when(api, held, lambda v: v["status"] == "needs_attention")
    assert "sender-side reason" in view["attention"] and "sender-auth" in view["attention"]
    assert "5.7.26" in view["attention"]
    [found] = await query(stack, "SELECT data->>'kind', data->>'bounce_class', data->>'reason',"
                                 " data->>'rule' FROM eventlog.events WHERE stream_id = :s AND"
                                 " type = 'BounceDetected'", s=f"bounce-{held}")
    assert found == ("soft", "sender-side", "sender-auth", "dmarc")

    greylisted = f"tempfail2.{uuid.uuid4().hex[:6]}@customer.example"
    grey_id, _ = await new_contact(api, email=greylisted)
    _, grey_enrollment = await enroll(api, grey_id)
    await view_when(api, grey_enrollment, lambda v: v["sends"] == 1, timeout=60)
    assert len(mail_to(stack, greylisted)) == 1

    hopeless = f"tempfail9.{uuid.uuid4().hex[:6]}@customer.example"
    hopeless_id, _ = await new_contact(api, email=hopeless)
    _, failed = await enroll(api, hopeless_id)
    view = await view_when(api, failed, lambda v: v["status"] == "needs_attention", timeout=60)
    assert "451" in view["attention"]


async def test_a_mailbox_daily_cap_defers_the_rest_to_the_next_day_without_dropping(stack, api):
    contacts = [await new_contact(api) for _ in range(3)]
    sequence_id = (await api.post("/v1/sequences", json={
        **SEQUENCE, "sender_email": CAPPED, "send_policy": {"mode": "as_soon_as_due"}})).json()["id"]
    enrollments = [(await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                                   json={"contact_id": c})).json()["id"] for c, _ in contacts]

    async def two_sent_one_deferred():
        views = [(await api.get(f"/v1/enrollments/{e}")).json() for e in enrollments]
        deferred = [v for v in views if v["schedule_note"] and "daily cap" in v["schedule_note"]]
        return views if sum(v["sends"] for v in views) == 2 and len(deferred) == 1 else None

    views = await eventually(two_sent_one_deferred, timeout=30)
    assert [v for v in views if v["sends"] == 0][0]["next_due_at"] is not None
    await advance(stack, timedelta(days=1))

    async def all_sent():
        views = [(await api.get(f"/v1/enrollments/{e}")).json() for e in enrollments]
        return all(v["sends"] == 1 for v in views)

    await eventually(all_sent, timeout=30)
    assert all(len(mail_to(stack, email)) == 1 for _, email in contacts)


async def test_call_steps_become_tasks_and_completing_one_moves_the_enrollment_on(stack, api):
    owner = f"이영희-{uuid.uuid4().hex[:4]}"
    contact_id, email = await new_contact(api, owner_name=owner)
    sequence_id, enrollment_id = await enroll(
        api, contact_id, steps=steps(0, 0, 0, channel="call"),
        send_policy={"mode": "as_soon_as_due"})

    async def task():
        items = (await api.get("/v1/tasks", params={"owner": owner, "which": "due"})).json()["items"]
        return items[0] if items else None

    found = await eventually(task, timeout=30)
    assert (found["channel"], found["sequence_id"]) == ("call", sequence_id)
    assert "김민수" in found["instructions"] and found["overdue"] is False
    assert len(mail_to(stack, email)) == 1  # the call is not "sent"
    done = await api.post(f"/v1/tasks/{found['task_id']}/complete", json={"outcome": "done"})
    assert done.status_code == 200, done.text
    await eventually(task, timeout=30)  # the third step is another call
    twice = await api.post(f"/v1/tasks/{found['task_id']}/complete", json={"outcome": "skipped"})
    assert twice.status_code == 409
    view = (await api.get(f"/v1/enrollments/{enrollment_id}")).json()
    assert (view["current_step"], view["sends"]) == (2, 1)
    bad = await api.post(f"/v1/tasks/{found['task_id']}/complete", json={"outcome": "maybe"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "outcome"
