"""Issue 13's reply rules end to end (the five services as processes, the thread-watcher on a
real Dovecot mailbox): a reply's intent is recorded and shown, "수신거부" as a reply opts the
contact out as the unsubscribe link does, and an out-of-office answer pauses the next step until
the day after its return date (on the moved clock), or until someone resumes it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import httpx

from services.thread_watcher.devmail import auto_reply_to, reply_to
from tests.e2e.test_flow import SEQUENCE, mail_to
from tests.e2e.test_replies import (  # noqa: F401  (fixtures)
    becomes,
    deliver,
    dovecot,
    enroll,
    now,
    query,
    sequence_id,
    stack,
)
from tests.support import eventually

SEOUL = ZoneInfo("Asia/Seoul")  # the zone of the tests' sequence (test_flow.SEQUENCE)


async def test_a_reply_saying_suppression_opts_the_contact_out_everywhere(
        stack, api, dovecot, sequence_id):
    enrollment_id, email, first = await enroll(stack, api, sequence_id)
    contact_id = (await api.get(f"/v1/enrollments/{enrollment_id}")).json()["contact_id"]
    other = httpx.post(f"{stack.gateway_url}/v1/sequences", headers=stack.api_headers,
                       json={**SEQUENCE, "name": "다른 시퀀스",
                             "steps": [{**SEQUENCE["steps"][0], "wait_days": 5}]}, timeout=30)
    assert other.status_code == 201, other.text
    second = await api.post(f"/v1/sequences/{other.json()['id']}/enrollments",
                            json={"contact_id": contact_id})
    assert second.status_code == 201, second.text

    await deliver(dovecot, reply_to(first, now(), "수신거부"))
    await becomes(api, enrollment_id, "replied")
    await becomes(api, second.json()["id"], "stopped")

    async def opted_out():
        return (await api.get(f"/v1/contacts/{contact_id}")).json()["opted_out"]
    await eventually(opted_out, timeout=30)
    viewed = (await api.get(f"/v1/enrollments/{enrollment_id}")).json()
    assert viewed["reply_intent"] == "unsubscribe"
    [(source, data)] = await query(
        stack, "SELECT data->>'source', data FROM eventlog.events WHERE type = 'ContactOptedOut'"
               " AND stream_id = :stream", stream=f"contact-{contact_id}")
    assert source == "reply"
    refused = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                             json={"contact_id": contact_id, "reenroll": True})
    assert refused.status_code != 201, refused.text  # an opted-out contact is not mailed again


async def test_an_interested_reply_is_recorded_with_its_intent_and_opts_nobody_out(
        stack, api, dovecot, sequence_id):
    enrollment_id, email, first = await enroll(stack, api, sequence_id)
    await deliver(dovecot, reply_to(first, now(), "네, 관심 있습니다. 다음 주에 미팅 가능할까요?"))
    await becomes(api, enrollment_id, "replied")
    viewed = (await api.get(f"/v1/enrollments/{enrollment_id}")).json()
    assert viewed["reply_intent"] == "interested"
    assert not (await api.get(f"/v1/contacts/{viewed['contact_id']}")).json()["opted_out"]
    [(intent, rule)] = await query(
        stack, "SELECT data->>'intent', data->>'intent_rule' FROM eventlog.events"
               " WHERE type = 'ReplyDetected' AND stream_id = :stream",
        stream=f"inbox-{enrollment_id}")
    assert (intent, rule) == ("interested", "interested.ko")
    timeline = await api.get(f"/v1/enrollments/{enrollment_id}/timeline")
    assert "intent interested" in timeline.text


async def _clock_now(api, enrollment_id: str) -> datetime:
    """The stack's (moved) clock, as it was when the enrollment started."""
    return datetime.fromisoformat((await api.get(f"/v1/enrollments/{enrollment_id}"))
                                  .json()["enrolled_at"])


async def _view(api, enrollment_id: str) -> dict:
    return (await api.get(f"/v1/enrollments/{enrollment_id}")).json()


async def test_an_out_of_office_answer_pauses_until_the_return_date_and_then_the_step_goes(
        stack, api, dovecot, sequence_id):
    enrollment_id, email, first = await enroll(stack, api, sequence_id)
    sent_at = await _clock_now(api, enrollment_id)
    back = (sent_at.astimezone(SEOUL) + timedelta(days=5)).date()
    await deliver(dovecot, auto_reply_to(first, sent_at, back))

    async def paused():
        return (await _view(api, enrollment_id))["paused_until"]
    until = datetime.fromisoformat(await eventually(paused, timeout=30))
    # the day after the return date (out_of_office_extra_days = 1), from its start in Seoul
    assert until == datetime.combine(back + timedelta(days=1), time(0), SEOUL)
    viewed = await _view(api, enrollment_id)
    assert (viewed["status"], viewed["pause_reason"]) == ("active", "out-of-office")

    async def planned_after_the_pause():
        rows = await query(stack, "SELECT due_at, state FROM scheduler.due_steps"
                                  " WHERE enrollment_id = :e AND state = 'pending'",
                           e=enrollment_id)
        return rows and rows[0][0] >= until and rows[0]
    await eventually(planned_after_the_pause, timeout=30)

    # step 2 was due two days after the first: three days on, it has not gone (paused) ...
    assert (await api.post("/v1/dev/clock/advance", json={"by": "3d"})).status_code == 200
    await asyncio.sleep(3)
    assert len(mail_to(stack, email)) == 1
    assert (await _view(api, enrollment_id))["status"] == "active"
    # ... and once the clock passes `until`, it goes, and the pause is over
    assert (await api.post("/v1/dev/clock/advance", json={"by": "4d"})).status_code == 200
    await becomes(api, enrollment_id, "done")
    assert len(mail_to(stack, email)) == 2
    assert (await _view(api, enrollment_id))["paused_until"] is None
    timeline = (await api.get(f"/v1/enrollments/{enrollment_id}/timeline")).text
    assert "paused until" in timeline and "out-of-office" in timeline


async def test_a_paused_enrollment_resumes_by_hand_and_only_a_paused_one(
        stack, api, dovecot, sequence_id):
    enrollment_id, email, first = await enroll(stack, api, sequence_id)
    refused = await api.post(f"/v1/enrollments/{enrollment_id}/resume")
    assert refused.status_code == 409, refused.text
    sent_at = await _clock_now(api, enrollment_id)
    await deliver(dovecot, auto_reply_to(first, sent_at))

    async def paused():
        return (await _view(api, enrollment_id))["paused_until"]
    await eventually(paused, timeout=30)
    resumed = await api.post(f"/v1/enrollments/{enrollment_id}/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["paused_until"] is None
    # planned again by its own wait (two days after the first step), not by the pause
    assert (await api.post("/v1/dev/clock/advance", json={"by": "2d"})).status_code == 200
    await becomes(api, enrollment_id, "done")
    assert len(mail_to(stack, email)) == 2


async def _at(stack, api, sequence_id: str, company: str, email: str):
    """Enrolled at `company` with `email`: (enrollment id, first email)."""
    enrollment_id, _, first = await enroll(stack, api, sequence_id, company=company, email=email)
    return enrollment_id, first


async def test_a_colleagues_reply_stops_or_pauses_the_companys_other_enrollments(
        stack, api, dovecot, sequence_id):
    """Same company: the company field when both have one (legal forms aside), else the domain;
    each enrollment's own sequence says stop (the default), pause or continue."""
    mark = uuid.uuid4().hex[:6]
    pausing = httpx.post(f"{stack.gateway_url}/v1/sequences", headers=stack.api_headers,
                         json={**SEQUENCE, "name": "동료 답장 시 일시정지",
                               "on_account_reply": {"action": "pause", "pause_days": 3}},
                         timeout=30)
    assert pausing.status_code == 201, pausing.text
    saved = (await api.get(f"/v1/sequences/{pausing.json()['id']}")).json()
    assert saved["on_account_reply"] == {"action": "pause", "pause_days": 3}
    replier, first = await _at(stack, api, sequence_id, f"(주)가나전자{mark}",
                           f"buyer.{mark}@gana{mark}.example")
    stopped, _ = await _at(stack, api, sequence_id, f"가나전자{mark}",
                           f"cto.{mark}@gana{mark}.example")
    paused, _ = await _at(stack, api, pausing.json()["id"], f"가나전자{mark} 주식회사",
                           f"ceo.{mark}@other{mark}.example")
    # the same domain but another company named on both: not a colleague
    elsewhere, _ = await _at(stack, api, sequence_id, f"다라상사{mark}",
                           f"sales.{mark}@gana{mark}.example")

    await deliver(dovecot, reply_to(first, now(), "검토해 보겠습니다"))
    await becomes(api, replier, "replied")
    await becomes(api, stopped, "stopped")
    view = await _view(api, stopped)
    assert view["ended_reason"] == f"buyer.{mark}@gana{mark}.example at the same company replied"

    async def is_paused():
        return (await _view(api, paused))["paused_until"]
    await eventually(is_paused, timeout=30)
    view = await _view(api, paused)
    assert (view["status"], view["pause_reason"]) == ("active", "account-reply")
    assert (await _view(api, elsewhere))["status"] == "active"
    assert (await _view(api, elsewhere))["paused_until"] is None
