"""Stop actions by bounce class, end to end on one stack: the capture server refuses tagged
recipients (`+dmarc`: 550 5.7.26, sender-side; `+spam`: 550 5.7.1, content-side; `+unknown`:
550 5.1.1, user unknown). A sender-side rejection holds the enrollment without suppressing the
address and, after three, pauses the mailbox until it is resumed; a user-unknown bounce
suppresses the address and re-enrolling is refused until the email changes; a content-side
one flags the step until it is edited; a suppressed domain is excluded at enrollment and held
at send; the bounce-rate guard pauses a sequence; the suppression list's API and screen."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from sequences.devstack.stack import Stack
from tests.e2e.test_flow import SEQUENCE, mail_to, new_contact
from tests.e2e.test_mailer import advance, view_when
from tests.support import eventually, stack_config, web_client

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # the guard acts from 4 deliveries on, above 20%: a sequence of 3 good and 2 bad addresses
    env = {"enrollment": {"BOUNCE_RATE_MIN_DELIVERIES": "4", "BOUNCE_RATE_LIMIT": "0.2"}}
    with Stack(stack_config(tmp_path_factory, service_env=env)) as running:
        yield running


@pytest.fixture
async def api(stack):
    async with stack.api_client() as client:
        yield client


def _hex() -> str:
    return uuid.uuid4().hex[:8]


async def _contact(api, email: str | None = None) -> tuple[str, str]:
    """A new contact with this address (a unique one by default): (id, address)."""
    if email is None:
        return await new_contact(api)
    contact_id, _ = await new_contact(api, email=email)
    return contact_id, email


async def _sequence(api, **fields) -> str:
    created = await api.post("/v1/sequences", json={**SEQUENCE, **fields})
    assert created.status_code == 201, created.text
    return created.json()["id"]


async def _enroll(api, sequence_id, contact_id, **body):
    return await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                          json={"contact_id": contact_id, **body})


async def _deliverability(api, address):
    found = (await api.get("/v1/mailboxes/deliverability")).json()
    return next(m for m in found if m["address"] == address)


async def _suppressed(api, value) -> list[dict]:
    return (await api.get("/v1/suppressions", params={"q": value})).json()["items"]


async def test_sender_side_rejections_hold_and_pause_the_mailbox_not_the_address(stack, api):
    sender = f"rep.{_hex()}@sales.example"
    sequence_id = await _sequence(api, sender_email=sender)
    held = []
    for _ in range(3):
        contact_id, email = await _contact(api, f"lee+dmarc.{_hex()}@customer.example")
        enrolled = await _enroll(api, sequence_id, contact_id)
        view = await view_when(api, enrolled.json()["id"],
                               lambda v: v["status"] == "needs_attention")
        held.append((view, email))
    for view, email in held:
        assert "sender-side" in view["attention"] and "5.7.26" in view["attention"]
        assert view["status"] != "bounced"
        assert await _suppressed(api, email) == []  # the address is not blamed
    paused = await eventually(lambda: _paused(api, sender))
    assert paused["rejections"] == 3 and paused["alert"]
    assert "sender-auth" in paused["paused_reason"]

    # a good address is not sent to from the paused mailbox: deferred, with the reason
    contact_id, email = await _contact(api)
    waiting = (await _enroll(api, sequence_id, contact_id)).json()["id"]
    view = await view_when(api, waiting, lambda v: "paused" in (v["schedule_note"] or ""))
    assert view["sends"] == 0 and mail_to(stack, email) == []

    async with web_client(stack, language="ko") as browser:
        health = (await browser.get("/settings/mailboxes")).text
        assert sender in health and "발송 재개" in health  # the resume button
    resumed = await api.post(f"/v1/mailboxes/{sender}/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["paused"] is False and resumed.json()["rejections"] == 0
    await advance(stack, timedelta(minutes=16))
    await view_when(api, waiting, lambda v: v["sends"] == 1)
    assert len(mail_to(stack, email)) == 1

    unknown = await api.post("/v1/mailboxes/nobody@else.example/resume")
    assert unknown.status_code == 404 and unknown.json()["errors"][0]["field"] == "address"


async def _paused(api, sender):
    found = await _deliverability(api, sender)
    return found if found["paused"] else None


async def test_a_user_unknown_bounce_suppresses_the_address_until_the_email_changes(stack, api):
    contact_id, email = await _contact(api, f"park+unknown.{_hex()}@customer.example")
    first = await _sequence(api)
    enrolled = (await _enroll(api, first, contact_id)).json()["id"]
    view = await view_when(api, enrolled, lambda v: v["status"] == "bounced")
    assert "5.1.1" in view["ended_reason"]
    [entry] = await eventually(lambda: _suppressed(api, email))
    assert entry == {**entry, "value": email, "kind": "address", "reason": "bounced"}

    second = await _sequence(api)
    refused = await _enroll(api, second, contact_id)
    assert refused.status_code == 409 and "suppression list" in refused.json()["detail"]
    tagged = f"t{_hex()}"
    await api.patch(f"/v1/contacts/{contact_id}", json={"tags": [tagged]})
    counts = await api.post(f"/v1/sequences/{second}/enrollments/bulk", json={
        "segment": {"tag": tagged}})
    assert (counts.json()["excluded_suppressed"], counts.json()["enrolled"]) == (1, 0)

    await api.patch(f"/v1/contacts/{contact_id}", json={"email": f"park.{_hex()}@customer.example"})
    assert (await _enroll(api, second, contact_id)).status_code == 201


async def test_a_suppressed_domain_is_excluded_at_enrollment_and_held_at_send(stack, api):
    domain = f"d{_hex()}.example"
    sequence_id = await _sequence(api)
    early_id, early = await _contact(api, f"choi@{domain}")
    enrolled = (await _enroll(api, sequence_id, early_id)).json()["id"]
    await view_when(api, enrolled, lambda v: v["sends"] == 1)  # step 1 before the suppression

    added = await api.post("/v1/suppressions", json={"value": f"@{domain.upper()}",
                                                     "note": "competitor"})
    assert added.status_code == 201 and added.json() == {"added": 1, "already": 0, "failed": []}
    again = await api.post("/v1/suppressions", json={"value": domain})
    assert again.json()["already"] == 1
    bad = await api.post("/v1/suppressions", json={"value": "not a domain"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "value"

    late_id, _ = await _contact(api, f"jung@{domain}")
    refused = await _enroll(api, sequence_id, late_id)
    assert refused.status_code == 409
    tagged = f"t{_hex()}"
    await api.patch(f"/v1/contacts/{late_id}", json={"tags": [tagged]})
    counts = await api.post(f"/v1/sequences/{sequence_id}/enrollments/bulk",
                            json={"segment": {"tag": tagged}})
    assert counts.json()["excluded_suppressed"] == 1 and counts.json()["enrolled"] == 0

    await advance(stack, timedelta(days=2))  # step 2 falls due: held, never sent
    view = await view_when(api, enrolled, lambda v: v["status"] == "needs_attention")
    assert "suppression list" in view["attention"]
    assert len(mail_to(stack, early)) == 1

    removed = await api.delete(f"/v1/suppressions/{domain}")
    assert removed.status_code == 204
    assert (await api.delete(f"/v1/suppressions/{domain}")).status_code == 404


async def test_a_content_side_rejection_holds_and_flags_the_step_until_it_is_edited(stack, api):
    sequence_id = await _sequence(api)
    contact_id, email = await _contact(api, f"han+spam.{_hex()}@customer.example")
    enrolled = (await _enroll(api, sequence_id, contact_id)).json()["id"]
    view = await view_when(api, enrolled, lambda v: v["status"] == "needs_attention")
    assert "content" in view["attention"]
    assert await _suppressed(api, email) == []
    sequence = (await api.get(f"/v1/sequences/{sequence_id}")).json()
    [flag] = sequence["step_flags"]
    first = sequence["steps"][0]
    assert flag["step_id"] == first["step_id"] and flag["reason"] == "spam-content"

    async with web_client(stack) as browser:
        page = await browser.get(f"/sequences/{sequence_id}?tab=steps")
        assert "Rejected as spam by the recipient" in page.text

    edited = [{**first, "body": "다시 작성한 본문 {{고객명}}"}, *sequence["steps"][1:]]
    changed = await api.put(f"/v1/sequences/{sequence_id}/steps", json={"steps": edited})
    assert changed.status_code == 200, changed.text
    assert (await api.get(f"/v1/sequences/{sequence_id}")).json()["step_flags"] == []


async def test_the_bounce_rate_guard_pauses_the_sequence_and_says_why(stack, api):
    sequence_id = await _sequence(api, sender_email=f"guard.{_hex()}@sales.example")
    for local in ("a", "b", "c"):  # three delivered first: two bad addresses then pass 20%
        contact_id, _ = await _contact(api, f"{local}.{_hex()}@customer.example")
        enrolled = (await _enroll(api, sequence_id, contact_id)).json()["id"]
        await view_when(api, enrolled, lambda v: v["sends"] == 1)
    for local in ("x+unknown", "y+unknown"):
        contact_id, _ = await _contact(api, f"{local}.{_hex()}@customer.example")
        await _enroll(api, sequence_id, contact_id)

    async def paused():
        found = (await api.get(f"/v1/sequences/{sequence_id}")).json()
        return found if found["state"] == "paused" else None
    sequence = await eventually(paused, timeout=30)
    assert "bounce-rate guard" in sequence["paused_reason"]
    async with web_client(stack, language="ko") as browser:
        listed = await browser.get("/campaigns")
        assert "반송률 보호로 일시 중지됨" in listed.text
    resumed = await api.post(f"/v1/sequences/{sequence_id}/resume")
    assert resumed.status_code == 200
    assert (await api.get(f"/v1/sequences/{sequence_id}")).json()["paused_reason"] is None


async def test_the_suppression_list_by_csv_and_in_settings(stack, api):
    domain = f"csv{_hex()}.example"
    csv = f"email,note\nkang@{domain},asked by phone\n{domain},\nnot-an-address,\n"
    imported = await api.post("/v1/suppressions/import", content=csv.encode(),
                              headers={"content-type": "text/csv"})
    assert imported.status_code == 200, imported.text
    result = imported.json()
    assert (result["added"], result["already"]) == (2, 0)
    assert [(f["row"], f["field"]) for f in result["failed"]] == [(4, "value")]
    exported = (await api.get("/v1/suppressions/export")).text
    assert f"kang@{domain},address,import,asked by phone" in exported

    async with web_client(stack) as browser:
        page = await browser.get("/settings/suppressions", params={"q": domain})
        assert f"kang@{domain}" in page.text
        refused = await browser.post("/settings/suppressions", data={
            "csrf_token": browser.csrf, "value": "nope"})
        assert refused.status_code == 422 and 'aria-invalid="true"' in refused.text
        confirm = await browser.get("/settings/suppressions/remove", params={"value": domain})
        assert "Take" in confirm.text and domain in confirm.text
        gone = await browser.post(f"/settings/suppressions/remove?value={domain}",
                                  data={"csrf_token": browser.csrf})
        assert gone.status_code in (200, 303)
    assert [s["value"] for s in await _suppressed(api, domain)] == [f"kang@{domain}"]
