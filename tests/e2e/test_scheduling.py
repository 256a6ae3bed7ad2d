"""The scheduler end to end, on one stack (two scheduler replicas) with a moved clock: exact
send moments across a DST change, two replicas firing each step once, pause/resume and edits of
a live sequence. Sending calendars (issue 14; once a module with a stack of its own): a
Friday-evening enrollment goes out Monday at the window's opening, across the March and
November DST changes in New York and Berlin; a step due on 설날 moves to the next working day;
two contacts in Seoul and Los Angeles each get their step at 09:00 their own time; editing the
window of a live sequence re-plans the pending step without firing it; the schedule preview
answers right after the sequence is saved, saying why each step moved; a null timezone clears
a contact's zone."""

from __future__ import annotations

import asyncio
import signal
import uuid
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from sequences import clock
from sequences.db import create_engine
from sequences.devstack.stack import Stack
from sequences.messaging.nats import connect
from tests.e2e.test_flow import mail_to, new_contact
from tests.support import eventually, stack_config

NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Two scheduler processes share the work."""
    with Stack(stack_config(tmp_path_factory, replicas={"scheduler": 2})) as running:
        yield running


def sequence(steps, zone="America/New_York", send_time="09:30"):
    policy = {"mode": "send_time", "send_time": send_time} if send_time else {"mode": "as_soon_as_due"}
    return {
        "name": "DST check", "sender_name": "Rep", "sender_email": "rep@sales.example",
        "timezone": zone, "send_policy": policy,
        "steps": [{"channel": "email", "body": f"step {i + 1}, {{{{customer_name}}}}",
                   "wait_days": wait, **({"subject": "Hello"} if i == 0 else {})}
                  for i, wait in enumerate(steps)],
    }


async def set_clock(stack, moment: datetime) -> None:
    nc = await connect(stack.env()["NATS_URL"], "tests")
    await clock.set_to(nc.jetstream(), moment)
    await nc.close()


async def test_a_0930_step_goes_out_at_0930_new_york_time_across_the_dst_change(stack, api):
    await set_clock(stack, datetime(2027, 3, 12, 10, 0, tzinfo=NEW_YORK))  # Friday, EST
    sequence_id = (await api.post("/v1/sequences", json=sequence([0, 1, 3]))).json()["id"]
    contact_id, email = await new_contact(api)
    assert (await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                           json={"contact_id": contact_id})).status_code == 201

    expected = [datetime(2027, 3, 13, 9, 30, tzinfo=NEW_YORK),   # Saturday, EST (UTC-5)
                datetime(2027, 3, 14, 9, 30, tzinfo=NEW_YORK),   # Sunday: DST began at 2:00
                datetime(2027, 3, 17, 9, 30, tzinfo=NEW_YORK)]   # Wednesday, EDT (UTC-4)
    for count, due in enumerate(expected, start=1):
        await set_clock(stack, due - timedelta(minutes=1))
        await asyncio.sleep(1.5)
        assert len(mail_to(stack, email)) == count - 1, f"step {count} went out early"
        await set_clock(stack, due + timedelta(seconds=2))

        async def arrived(count=count):
            return len(mail_to(stack, email)) == count

        await eventually(arrived, timeout=20)
        sent = parsedate_to_datetime(mail_to(stack, email)[-1]["Date"])
        assert due <= sent < due + timedelta(seconds=30), (count, sent)
        assert sent.astimezone(NEW_YORK).strftime("%H:%M") == "09:30"
    assert [parsedate_to_datetime(m["Date"]).utcoffset() for m in mail_to(stack, email)] == [
        timedelta(hours=-5), timedelta(hours=-4), timedelta(hours=-4)]

    preview = (await api.get(f"/v1/sequences/{sequence_id}/schedule",
                             params={"start": "2027-03-12T10:00:00"})).json()
    assert [s["local"] for s in preview["steps"]] == [d.isoformat() for d in expected]


async def test_two_schedulers_fire_every_step_once_even_when_one_dies_mid_claim(stack, api):
    # only a replica that dies right after claiming runs at first
    stack.kill_service("scheduler", 0)
    stack.kill_service("scheduler", 1)
    stack.start_service("scheduler", 1, extra_env={"SEQUENCES_CRASH_AT": "scheduler.after_claim"})
    sequence_id = (await api.post("/v1/sequences", json=sequence([0], send_time=None))).json()["id"]
    contacts = [await new_contact(api) for _ in range(60)]
    for contact_id, _ in contacts:
        response = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                                  json={"contact_id": contact_id})
        assert response.status_code == 201
    crashed = stack.processes[("scheduler", 1)]
    assert await asyncio.to_thread(crashed.wait, 60) == -signal.SIGKILL
    assert await step_due_counts(stack, sequence_id) == (0, 0)

    # then two healthy replicas share the work: every step fires once, every email arrives once
    stack.start_service("scheduler", 0)
    stack.start_service("scheduler", 1)

    async def all_sent():
        return all(mail_to(stack, email) for _, email in contacts)

    await eventually(all_sent, timeout=60)
    await asyncio.sleep(1)
    assert all(len(mail_to(stack, email)) == 1 for _, email in contacts)
    assert await step_due_counts(stack, sequence_id) == (60, 60)


async def step_due_counts(stack, sequence_id) -> tuple[int, int]:
    """StepDue events of a sequence in the log: how many, and for how many enrollments."""
    engine = create_engine(stack.database_url, pool_size=1)
    async with engine.connect() as conn:
        counts = (await conn.execute(text(
            "SELECT count(*), count(DISTINCT stream_id) FROM eventlog.events"
            " WHERE type = 'StepDue' AND data->>'sequence_id' = :id"), {"id": sequence_id})).one()
    await engine.dispose()
    return tuple(counts)


async def test_pausing_holds_steps_and_resuming_replans_missed_ones_from_the_resume_moment(stack, api):
    sequence_id = (await api.post("/v1/sequences", json=sequence([0, 1], send_time=None))).json()["id"]
    contact_id, email = await new_contact(api)
    enrolled = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                              json={"contact_id": contact_id})

    async def sent(n):
        return len(mail_to(stack, email)) == n

    async def held():  # the scheduler applies the pause a moment after the API answers
        view = (await api.get(f"/v1/enrollments/{enrolled.json()['id']}")).json()
        return view["held"] and view["current_step"] == 1

    await eventually(lambda: sent(1))
    paused = await api.post(f"/v1/sequences/{sequence_id}/pause")
    await eventually(held)
    assert paused.json()["state"] == "paused"
    assert "paused" in paused.json()["headline"]
    refused = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                             json={"contact_id": (await new_contact(api))[0]})
    assert refused.status_code == 409
    nc = await connect(stack.env()["NATS_URL"], "tests")
    await clock.advance(nc.jetstream(), timedelta(days=3))
    await nc.close()
    await asyncio.sleep(2)
    assert await sent(1), "a paused sequence sent a step"
    assert (await api.post(f"/v1/sequences/{sequence_id}/resume")).json()["state"] == "live"
    await eventually(lambda: sent(2))


async def test_editing_steps_replans_pending_ones_and_deleting_a_waited_step_moves_to_the_next(stack, api):
    body = sequence([0, 5, 1], send_time=None)
    sequence_id = (await api.post("/v1/sequences", json=body)).json()["id"]
    contact_id, email = await new_contact(api)
    enrollment = (await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                                 json={"contact_id": contact_id})).json()["id"]

    async def sent(n):
        return len(mail_to(stack, email)) == n

    await eventually(lambda: sent(1))
    steps = (await api.get(f"/v1/sequences/{sequence_id}")).json()["steps"]
    # drop the 5-day step everyone waits on; the 1-day step now comes next
    edited = await api.put(f"/v1/sequences/{sequence_id}/steps",
                           json={"steps": [steps[0], steps[2]]})
    assert edited.status_code == 200, edited.text
    assert [s["step_id"] for s in edited.json()["steps"]] == [steps[0]["step_id"], steps[2]["step_id"]]
    nc = await connect(stack.env()["NATS_URL"], "tests")
    await clock.advance(nc.jetstream(), timedelta(days=1, minutes=1))
    await nc.close()
    await eventually(lambda: sent(2))
    assert "step 3" in mail_to(stack, email)[-1].get_body(("plain",)).get_content()

    async def done():
        return (await api.get(f"/v1/enrollments/{enrollment}")).json()["status"] == "done"

    await eventually(done)


async def test_bad_schedule_requests_name_the_field(stack, api):
    unknown = await api.get(f"/v1/sequences/{uuid.uuid4()}/schedule")
    assert unknown.status_code == 404
    assert unknown.json()["errors"][0]["field"] == "sequence_id"
    bad_start = await api.get(f"/v1/sequences/{uuid.uuid4()}/schedule", params={"start": "soon"})
    assert bad_start.status_code == 422
    assert bad_start.json()["errors"][0]["field"] == "query.start"
    for steps, field in (([400], "steps[0].wait_days"), ([-1], "steps[0].wait_days")):
        response = await api.post("/v1/sequences", json=sequence(steps))
        assert response.status_code == 422
        assert field in [e["field"] for e in response.json()["errors"]]
    bad_time = await api.post("/v1/sequences", json=sequence([0], send_time="25:00"))
    assert "send_policy.send_time" in [e["field"] for e in bad_time.json()["errors"]]


# --- sending calendars (issue 14) ----------------------------------------------------------

WORKWEEK = {"mode": "window", "window": {"days": ["mon", "tue", "wed", "thu", "fri"],
                                         "blocks": [{"start": "09:00", "end": "17:00"}]}}


def calendar_sequence(zone: str, waits=(0,), policy=WORKWEEK, **settings) -> dict:
    return {
        "name": "Calendar check", "sender_name": "Rep", "sender_email": "rep@sales.example",
        "timezone": zone, "send_policy": policy, **settings,
        "steps": [{"channel": "email", "body": f"step {i + 1}", "wait_days": wait,
                   **({"subject": "Hello"} if i == 0 else {})} for i, wait in enumerate(waits)],
    }


async def enroll(api, sequence_id: str, **contact) -> str:
    contact_id, email = await new_contact(api, **contact)
    response = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                              json={"contact_id": contact_id})
    assert response.status_code == 201, response.text
    return email


async def goes_out_at(stack, emails: list[str], expected: datetime, count: int = 1) -> None:
    """Nothing a minute before `expected`; then each address's `count`th email, sent at it."""
    await set_clock(stack, expected - timedelta(minutes=1))
    await asyncio.sleep(1.5)
    for email in emails:
        assert len(mail_to(stack, email)) == count - 1, f"{email} got mail before {expected}"
    await set_clock(stack, expected + timedelta(seconds=2))

    async def arrived():
        return all(len(mail_to(stack, email)) == count for email in emails)

    await eventually(arrived, timeout=20)
    for email in emails:
        sent = parsedate_to_datetime(mail_to(stack, email)[-1]["Date"])
        assert expected <= sent < expected + timedelta(seconds=30), (email, sent)


@pytest.mark.parametrize("zone, friday, monday_offset", [
    ("America/New_York", datetime(2027, 3, 12, 18, 0), timedelta(hours=-4)),  # EST -> EDT
    ("America/New_York", datetime(2027, 11, 5, 18, 0), timedelta(hours=-5)),  # EDT -> EST
    ("Europe/Berlin", datetime(2027, 3, 26, 18, 0), timedelta(hours=2)),  # CET -> CEST
    ("Europe/Berlin", datetime(2027, 10, 29, 18, 0), timedelta(hours=1)),  # CEST -> CET
])
async def test_a_friday_evening_enrollment_goes_out_monday_at_0900_across_dst(
        stack, api, zone, friday, monday_offset):
    tz = ZoneInfo(zone)
    await set_clock(stack, friday.replace(tzinfo=tz))
    sequence_id = (await api.post("/v1/sequences", json=calendar_sequence(zone))).json()["id"]
    email = await enroll(api, sequence_id)
    monday = (friday + timedelta(days=3)).replace(hour=9, tzinfo=tz)
    await goes_out_at(stack, [email], monday)
    assert parsedate_to_datetime(mail_to(stack, email)[0]["Date"]).utcoffset() == monday_offset


async def test_a_step_due_on_seollal_moves_to_the_next_working_day(stack, api):
    seoul = ZoneInfo("Asia/Seoul")
    await set_clock(stack, datetime(2027, 2, 5, 10, 0, tzinfo=seoul))  # Friday
    created = await api.post("/v1/sequences", json=calendar_sequence(
        "Asia/Seoul", waits=(0, 3), holidays={"country": "KR"}))
    assert created.status_code == 201, created.text
    email = await enroll(api, created.json()["id"])

    async def first_sent():
        return len(mail_to(stack, email)) == 1

    await eventually(first_sent, timeout=20)
    # due Monday 8 February 10:00 (설날 다음날), the 9th is its substitute holiday: Wednesday
    await goes_out_at(stack, [email], datetime(2027, 2, 10, 9, 0, tzinfo=seoul), count=2)


async def test_each_contact_gets_the_step_at_0900_in_their_own_zone(stack, api):
    seoul, los_angeles = ZoneInfo("Asia/Seoul"), ZoneInfo("America/Los_Angeles")
    await set_clock(stack, datetime(2027, 4, 6, 12, 0, tzinfo=ZoneInfo("UTC")))  # a Tuesday
    created = await api.post("/v1/sequences", json=calendar_sequence(
        "Asia/Seoul", policy={"mode": "send_time", "send_time": "09:00"}, zone_mode="contact"))
    sequence_id = created.json()["id"]
    in_seoul = await enroll(api, sequence_id, timezone="Asia/Seoul")
    in_la = await enroll(api, sequence_id, timezone="America/Los_Angeles")
    # 12:00 UTC is 21:00 in Seoul and 05:00 in Los Angeles (PDT)
    await goes_out_at(stack, [in_la], datetime(2027, 4, 6, 9, 0, tzinfo=los_angeles))
    assert mail_to(stack, in_seoul) == []
    await goes_out_at(stack, [in_seoul], datetime(2027, 4, 7, 9, 0, tzinfo=seoul))


async def test_a_new_window_replans_the_pending_step_without_firing_it(stack, api):
    seoul = ZoneInfo("Asia/Seoul")
    await set_clock(stack, datetime(2027, 6, 4, 18, 0, tzinfo=seoul))  # Friday evening
    created = await api.post("/v1/sequences", json=calendar_sequence("Asia/Seoul"))
    sequence_id = created.json()["id"]
    email = await enroll(api, sequence_id)
    await asyncio.sleep(1)
    # now every day 17:00-20:00: by the new rules the step (due Friday 18:00, planned for
    # Monday 09:00) would go at once; it goes at the first moment they allow from Monday 09:00
    changed = await api.patch(f"/v1/sequences/{sequence_id}", json={"send_policy": {
        "mode": "window", "window": {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                                     "blocks": [{"start": "17:00", "end": "20:00"}]}}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["send_policy"]["window"]["blocks"] == [{"start": "17:00", "end": "20:00"}]
    await asyncio.sleep(1.5)
    assert mail_to(stack, email) == []
    await goes_out_at(stack, [email], datetime(2027, 6, 7, 17, 0, tzinfo=seoul))

    refused = await api.patch(f"/v1/sequences/{sequence_id}", json={"send_policy": {
        "mode": "window", "window": {"days": ["mon"], "blocks": [
            {"start": "09:00", "end": "12:00"}, {"start": "11:00", "end": "13:00"}]}}})
    assert refused.status_code == 422
    assert [e["field"] for e in refused.json()["errors"]] == ["send_policy.window.blocks"]
    unknown = await api.patch(f"/v1/sequences/{sequence_id}", json={"holidays": {"country": "XX"}})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "holidays"


async def test_the_preview_answers_right_after_saving_and_says_why(stack, api):
    new_york = ZoneInfo("America/New_York")
    await set_clock(stack, datetime(2027, 7, 1, 12, 0, tzinfo=new_york))
    created = await api.post("/v1/sequences", json=calendar_sequence(
        "America/New_York", waits=(0, 1), holidays={"country": "US"}))
    sequence_id = created.json()["id"]
    preview = await api.get(f"/v1/sequences/{sequence_id}/schedule",
                            params={"start": "2027-07-02T18:00:00"})  # Friday; 5 July: holiday
    assert preview.status_code == 200, preview.text
    steps = preview.json()["steps"]
    assert [s["local"] for s in steps] == ["2027-07-06T09:00:00-04:00", "2027-07-07T09:00:00-04:00"]
    assert [m["kind"] for m in steps[0]["moved"]] == [
        "after_window", "not_sending_day", "not_sending_day", "holiday"]
    assert steps[0]["moved"][-1]["date"] == "2027-07-05"


async def test_a_null_timezone_clears_the_contacts_zone_and_the_sequences_zone_is_used(stack, api):
    created = await api.post("/v1/sequences", json=calendar_sequence(
        "Asia/Seoul", policy={"mode": "send_time", "send_time": "09:00"}, zone_mode="contact"))
    sequence_id = created.json()["id"]
    contact_id, _ = await new_contact(api, timezone="America/Los_Angeles", company="Zone Co")

    async def preview_zone() -> str:
        preview = await api.get(f"/v1/sequences/{sequence_id}/schedule",
                                params={"start": "2027-07-01T12:00:00Z", "contact_id": contact_id})
        assert preview.status_code == 200, preview.text
        return preview.json()["timezone"]

    assert await preview_zone() == "America/Los_Angeles"
    kept = await api.patch(f"/v1/contacts/{contact_id}", json={"company": None, "name": "Kim"})
    assert kept.status_code == 200, kept.text  # null for another field: unchanged
    assert (kept.json()["timezone"], kept.json()["company"]) == ("America/Los_Angeles", "Zone Co")
    cleared = await api.patch(f"/v1/contacts/{contact_id}", json={"timezone": None})
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["timezone"] is None
    assert (await api.get(f"/v1/contacts/{contact_id}")).json()["timezone"] is None
    assert await preview_zone() == "Asia/Seoul"  # falls back to the sequence's zone
