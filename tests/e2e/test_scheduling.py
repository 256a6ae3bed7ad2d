"""The scheduler end to end: exact send moments across a DST change, two scheduler replicas
firing each step once, pause/resume and edits of a live sequence."""

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
