"""Click tracking and analytics end to end: a tracked link followed with an ordinary HTTP client
lands on the original URL and counts one person's click; a scanner's counts as a machine's; a
forged token records nothing; the analytics endpoint adds it up (the rebuild test in
test_flow.py compares the analytics tables rebuilt from the log with the live ones)."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx

from contracts import commands as c
from contracts.values import TrackedRequest
from sequences.messaging.nats import connect
from sequences.signing import Signer
from services.gateway import bus
from tests.e2e.test_flow import SEQUENCE, mail_to, new_contact
from tests.support import eventually, web_client

BROWSER = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko)"
           " Version/17.5 Safari/605.1.15")


def with_links(stack, **settings) -> dict:
    body = (f"안녕하세요 {{{{고객명}}}}님,\n자료: {stack.gateway_url}/healthz?doc=guide 입니다.\n"
            f"가격: {stack.gateway_url}/readyz.\n이건 링크가 아님: javascript:alert(1)")
    return {**SEQUENCE, **settings, "steps": [
        {"channel": "email", "wait_days": 0, "subject": "{{고객명}}님, 자료입니다", "body": body}]}


async def sent_email(stack, api, sequence: dict):
    contact_id, email = await new_contact(api)
    sequence_id = (await api.post("/v1/sequences", json=sequence)).json()["id"]
    enrolled = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                              json={"contact_id": contact_id})
    assert enrolled.status_code == 201, enrolled.text

    async def delivered():
        return mail_to(stack, email)

    [message] = await eventually(delivered, timeout=60)
    return sequence_id, message


async def analytics_when(api, sequence_id, condition):
    async def check():
        body = (await api.get(f"/v1/sequences/{sequence_id}/analytics")).json()
        return body if condition(body["totals"]["counts"]) else None
    return await eventually(check, timeout=60)


async def test_a_followed_link_lands_on_its_url_and_counts_a_person_a_scanner_a_machine(
        stack, api):
    sequence_id, message = await sent_email(stack, api, with_links(stack))
    text_part = message.get_body(("plain",)).get_content()
    html_part = message.get_body(("html",)).get_content()
    links = re.findall(r"https?://\S+/c/[\w.-]+", text_part)
    assert len(links) == 2, text_part
    assert "javascript:alert(1)" in text_part and "javascript:" not in "".join(links)
    assert f'<a href="{links[0]}">{stack.gateway_url}/healthz?doc=guide</a>' in html_part
    await asyncio.sleep(6)  # past the "too soon after sending" window of the machine rules

    async with httpx.AsyncClient(timeout=30, headers={"user-agent": BROWSER}) as reader:
        followed = await reader.get(links[0], follow_redirects=True)
        assert followed.status_code == 200
        assert str(followed.url) == f"{stack.gateway_url}/healthz?doc=guide"
        assert followed.history[0].status_code == 302
        await asyncio.sleep(1.5)  # not in the same second as the reader's click (a burst)
        forged = await reader.get(links[1][:-3] + ("aaa" if not links[1].endswith("aaa")
                                                   else "bbb"))
        assert forged.status_code == 404 and "location" not in forged.headers
        assert "text/html" in forged.headers["content-type"]
    async with httpx.AsyncClient(timeout=30, headers={"user-agent": "Barracuda Sentinel"}) as scan:
        scanned = await scan.get(links[1])
        assert (scanned.status_code, scanned.headers["location"]) == (
            302, f"{stack.gateway_url}/readyz")
        # the gateway counts its redirects (the HTTP duration metric leaves the links out)
        exported = (await scan.get(f"{stack.gateway_url}/metrics")).text
        assert re.search(r'sequences_tracking_clicks_total\{[^}]*outcome="redirected"', exported)
        assert re.search(r'sequences_tracking_clicks_total\{[^}]*outcome="gone"', exported)
        assert 'http_route="/c/{token}"' not in exported

    body = await analytics_when(api, sequence_id,
                                lambda c: c["clicked_human"] + c["clicked_machine"] == 2)
    counts = body["totals"]["counts"]
    assert (counts["enrolled"], counts["sent"], counts["delivered"]) == (1, 1, 1)
    assert (counts["clicked_human"], counts["clicked_machine"]) == (1, 1)
    assert body["totals"]["rates"]["click_rate"] == {
        "value": 1.0, "formula": "unique human clicks / delivered"}
    [step] = body["steps"]
    assert step["counts"]["clicked_human"] == 1 and step["position"] == 1

    # the app's Steps tab shows people and machines apart, the Stats tab the rates' formulas
    async with web_client(stack) as browser:
        steps_tab = (await browser.get(f"/sequences/{sequence_id}?tab=steps")).text
        assert "Clicked (people / machines)" in steps_tab and "1 / 1" in steps_tab
        stats_tab = await browser.get(f"/sequences/{sequence_id}?tab=stats")
        assert stats_tab.status_code == 200
        assert "unique human clicks / delivered" in stats_tab.text and "100%" in stats_tab.text
        bad_range = await browser.get(f"/sequences/{sequence_id}?tab=stats&from=2026-05-02"
                                      "&to=2026-05-01")
        assert bad_range.status_code == 422 and 'aria-invalid="true"' in bad_range.text
    async with web_client(stack, language="ko") as browser:
        korean = (await browser.get(f"/sequences/{sequence_id}?tab=stats")).text
        assert "사람의 고유 클릭 수 / 전달 수" in korean and "통계" in korean


async def test_a_sequence_without_tracking_sends_its_links_as_written_and_no_pixel(stack, api):
    _, message = await sent_email(stack, api, with_links(
        stack, tracking={"opens": False, "clicks": False}))
    text_part = message.get_body(("plain",)).get_content()
    html_part = message.get_body(("html",)).get_content()
    assert "/c/" not in text_part and f"{stack.gateway_url}/healthz?doc=guide" in text_part
    assert "<img" not in html_part and "/t/" not in html_part
    assert f'<a href="{stack.gateway_url}/healthz?doc=guide">' in html_part


async def test_an_analytics_range_that_ends_before_it_begins_is_refused_naming_the_field(
        stack, api):
    sequence_id = (await api.post("/v1/sequences", json=with_links(stack))).json()["id"]
    bad = await api.get(f"/v1/sequences/{sequence_id}/analytics?from=2026-05-02&to=2026-05-01")
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "to"
    ok = await api.get(f"/v1/sequences/{sequence_id}/analytics?from=2026-05-01&to=2026-05-31")
    assert ok.status_code == 200 and ok.json()["totals"]["rates"]["open_rate"]["value"] is None


def ab_sequence() -> dict:
    def variants(step: int):
        return [{"subject": f"A{step} {{{{고객명}}}}" if step == 1 else None,
                 "body": f"variant A step {step}", "weight": 50},
                {"subject": f"B{step} {{{{고객명}}}}" if step == 1 else None,
                 "body": f"variant B step {step}", "weight": 50}]
    return {**SEQUENCE, "steps": [
        {"channel": "email", "wait_days": 0, "subject": "기본 {{고객명}}", "body": "기본",
         "variants": variants(1)},
        {"channel": "email", "wait_days": 0, "body": "기본 2", "variants": variants(2)}]}


async def test_ab_variants_keep_each_enrollments_letter_and_a_chosen_winner_routes_new_sends(
        stack, api):
    sequence_id = (await api.post("/v1/sequences", json=ab_sequence())).json()["id"]

    enrollments = []

    async def enroll_one() -> str:
        contact_id, email = await new_contact(api)
        made = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                              json={"contact_id": contact_id})
        assert made.status_code == 201, made.text
        enrollments.append(made.json()["id"])
        return email

    async def both_steps(email):
        async def two():
            got = mail_to(stack, email)
            return got if len(got) == 2 else None
        first, second = await eventually(two, timeout=90)
        if first["Subject"].startswith("Re:"):
            first, second = second, first
        return first, second

    split = []
    for email in [await enroll_one() for _ in range(8)]:
        first, second = await both_steps(email)
        letter = first["Subject"][0]
        assert letter in "AB", first["Subject"]
        body = second.get_body(("plain",)).get_content()
        assert f"variant {letter} step 2" in body  # the same letter on every step
        split.append(letter)
    body = await analytics_when(api, sequence_id, lambda c: c["sent"] == 16)
    per_variant = {v["variant"]: v["counts"]["sent"] for v in body["steps"][0]["variants"]}
    assert per_variant == {letter: split.count(letter) for letter in set(split)}

    chosen = await api.post(f"/v1/sequences/{sequence_id}/variants/winner", json={"letter": "B"})
    assert chosen.status_code == 200, chosen.text
    for email in [await enroll_one() for _ in range(3)]:
        first, second = await both_steps(email)
        assert first["Subject"].startswith("B1") and "variant B step 2" in \
            second.get_body(("plain",)).get_content()
    # an enrollee of before the choice has both decisions in its timeline, in words too
    timeline = (await api.get(f"/v1/enrollments/{enrollments[0]}/timeline")).json()["entries"]
    types = [e["type"] for e in timeline]
    assert types.count("VariantAssigned") == 1 and types.count("VariantWinnerChosen") == 1
    assert types.index("VariantAssigned") < types.index("VariantWinnerChosen")
    async with web_client(stack) as browser:
        page = (await browser.get(f"/enrollments/{enrollments[0]}")).text
        assert f"A/B variant {split[0]} assigned" in page
        assert "A/B winner: variant B, chosen by" in page
    async with web_client(stack, language="ko") as browser:
        assert "A/B 우승 버전: B" in (await browser.get(f"/enrollments/{enrollments[0]}")).text
    absent = await api.post(f"/v1/sequences/{sequence_id}/variants/winner", json={"letter": "C"})
    assert absent.status_code == 422 and absent.json()["errors"][0]["field"] == "letter"


async def test_variants_whose_weights_do_not_add_up_or_lack_a_subject_are_refused(stack, api):
    bad_weights = ab_sequence()
    bad_weights["steps"][0]["variants"][0]["weight"] = 60
    refused = await api.post("/v1/sequences", json=bad_weights)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"].startswith("steps[0].variants"), refused.text
    assert "add up to 100" in refused.text
    no_subject = ab_sequence()
    no_subject["steps"][0]["variants"][1]["subject"] = None
    refused = await api.post("/v1/sequences", json=no_subject)
    assert refused.status_code == 422 and "variant B needs a subject" in refused.text


async def test_a_batch_of_clicks_sent_twice_records_each_click_once(stack, api):
    """The gateway sends a batch again when its answer was lost: the mailer keeps each click id
    once, and a click of an email it never sent is left out without failing the batch."""
    sequence_id, message = await sent_email(stack, api, with_links(stack))
    link = re.findall(r"https?://\S+/c/[\w.-]+", message.get_body(("plain",)).get_content())[0]
    payload = Signer(stack.env()["SEQUENCES_SECRET"].encode()).verify(
        "click", link.rsplit("/", 1)[1])
    seen = TrackedRequest(method="GET", user_agent=BROWSER, client_ip="203.0.113.9")

    def click(enrollment_id, seconds_ago: float) -> c.SeenClick:
        return c.SeenClick(click_id=uuid.uuid4(), enrollment_id=enrollment_id,
                           step_id=payload["s"], link_index=0, url=payload["u"], request=seen,
                           seconds_ago=seconds_ago)

    # a person's click of the email, and one of an email never sent (an unknown enrollment)
    batch = c.RecordEmailClicks(workspace_id=payload["w"], clicks=[
        click(uuid.UUID(payload["e"]), 0), click(uuid.uuid4(), 0)])
    async with await connect(stack.env()["NATS_URL"], "tests") as nc:
        await asyncio.sleep(6)  # past the "too soon after sending" window of the machine rules
        for _ in range(2):
            await bus.send(nc, batch)
    body = await analytics_when(api, sequence_id, lambda c: c["clicked_human"] >= 1)
    timeline = (await api.get(f"/v1/enrollments/{payload['e']}/timeline")).json()["entries"]
    assert [e["type"] for e in timeline].count("EmailClicked") == 1
    assert body["totals"]["counts"]["clicked_human"] == 1
