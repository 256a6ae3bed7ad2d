"""The backbone flow through all five services as separate processes, over real NATS,
PostgreSQL and SMTP: create a sequence and a contact, enroll, receive two threaded emails."""

from __future__ import annotations

import asyncio
import signal
import uuid
from email.utils import parsedate_to_datetime

import httpx
import pytest
from sqlalchemy import text

from bench.service_common import until_settled
from sequences import projections
from sequences.db import create_engine
from sequences.devstack.capture import read_captured
from sequences.devstack.ports import free_port
from sequences.services import all_projections
from tests.support import eventually, rebuild_projections

SEQUENCE = {
    "name": "견적 후 후속",
    "purpose": "silence after a quote",
    "sender_name": "이영희 (Hanbit Sales)",
    "sender_email": "younghee@sales.example",
    "timezone": "Asia/Seoul",
    "send_policy": {"mode": "as_soon_as_due"},
    "steps": [
        {"channel": "email", "subject": "{{고객명}}님, {{회사명}} 견적 건", "wait_days": 0,
         "body": "안녕하세요 {{고객명}}님,\n{{회사명}}에 보내드린 견적 관련 연락드립니다."},
        {"channel": "email", "wait_days": 2,
         "body": "{{고객명|고객}}님, 혹시 검토해 보셨을까요?"},
    ],
}


def mail_to(stack, address: str):
    return [m for m in read_captured(stack.mail_dir) if m["To"] == address]


async def new_contact(api, **fields) -> tuple[str, str]:
    email = f"kim.{uuid.uuid4().hex[:8]}@customer.example"
    response = await api.post("/v1/contacts", json={
        "name": "김민수", "company": "한빛상사", "email": email, **fields})
    assert response.status_code == 201, response.text
    return response.json()["id"], email


async def test_two_email_steps_go_out_threaded_and_the_enrollment_is_done(stack, api):
    created = await api.post("/v1/sequences", json=SEQUENCE)
    assert created.status_code == 201, created.text
    sequence_id = created.json()["id"]
    contact_id, email = await new_contact(api)

    enrolled = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                              json={"contact_id": contact_id})
    assert enrolled.status_code == 201, enrolled.text
    enrollment_url = f"/v1/enrollments/{enrolled.json()['id']}"

    async def first_step_recorded():
        view = (await api.get(enrollment_url)).json()
        return view if view["sends"] == 1 else None

    view = await eventually(first_step_recorded, timeout=30)
    assert (view["status"], view["current_step"]) == ("active", 1)
    [first] = mail_to(stack, email)
    assert first["Subject"] == "김민수님, 한빛상사 견적 건"
    assert "안녕하세요 김민수님" in first.get_body(("plain",)).get_content()
    assert first["From"].addresses[0].display_name == "이영희 (Hanbit Sales)"

    # nothing more before two days have passed
    await asyncio.sleep(1)
    assert len(mail_to(stack, email)) == 1
    moved = await api.post("/v1/dev/clock/advance", json={"by": "2d"})
    assert moved.status_code == 200, moved.text

    async def done():
        view = (await api.get(enrollment_url)).json()
        return view if view["status"] == "done" else None

    view = await eventually(done, timeout=30)
    assert (view["current_step"], view["sends"]) == (2, 2)
    first, second = mail_to(stack, email)
    assert second["Subject"] == "Re: 김민수님, 한빛상사 견적 건"
    assert second["In-Reply-To"] == first["Message-ID"]
    assert second["References"].split() == [first["Message-ID"]]
    assert "김민수님, 혹시 검토해 보셨을까요?" in second.get_body(("plain",)).get_content()
    elapsed = parsedate_to_datetime(second["Date"]) - parsedate_to_datetime(first["Date"])
    assert elapsed.days == 2

    detail = (await api.get(f"/v1/sequences/{sequence_id}")).json()
    assert detail["headline"] == "1 enrolled · live"


async def enroll_into_a_crashing_mailer(stack, api, crash_at: str):
    """An enrollment whose first email a mailer set to die at `crash_at` handles (it does)."""
    stack.kill_service("mailer")
    stack.start_service("mailer", extra_env={"SEQUENCES_CRASH_AT": crash_at})
    sequence_id = (await api.post("/v1/sequences", json=SEQUENCE)).json()["id"]
    contact_id, email = await new_contact(api)
    enrolled = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                              json={"contact_id": contact_id})
    crashed = stack.processes[("mailer", 0)]
    assert await asyncio.to_thread(crashed.wait, 60) == -signal.SIGKILL
    return enrolled, email


async def test_a_mailer_killed_before_recording_the_send_sends_the_email_exactly_once(stack, api):
    enrolled, email = await enroll_into_a_crashing_mailer(stack, api, "mailer.before_smtp")
    assert mail_to(stack, email) == []

    stack.start_service("mailer")

    async def sent():
        return (await api.get(f"/v1/enrollments/{enrolled.json()['id']}")).json()["sends"] == 1

    await eventually(sent, timeout=30)
    await asyncio.sleep(1)  # room for a duplicate to arrive, if there were one
    assert len(mail_to(stack, email)) == 1


async def test_a_mailer_that_cannot_ask_whether_an_unrecorded_send_arrived_waits_instead_of_resending(
        stack, api):
    # the SMTP server accepted the email, the mailer died before recording it
    enrolled, email = await enroll_into_a_crashing_mailer(stack, api, "mailer.after_smtp")
    assert len(mail_to(stack, email)) == 1

    # nobody answers where delivery is checked (the capture server busy or restarting)
    log = stack.log_dir / "mailer.log"
    asked_before = log.read_text().count("cannot verify delivery")
    stack.start_service("mailer", extra_env={"SMTP_VERIFY_URL": f"http://127.0.0.1:{free_port()}"})

    async def asked():
        return log.read_text().count("cannot verify delivery") > asked_before

    await eventually(asked, timeout=30)
    await asyncio.sleep(1)  # room for the second send, if there were one
    assert len(mail_to(stack, email)) == 1

    # once it can be asked, the send is recorded, not repeated
    stack.restart_service("mailer")

    async def sent():
        return (await api.get(f"/v1/enrollments/{enrolled.json()['id']}")).json()["sends"] == 1

    await eventually(sent, timeout=60)
    assert len(mail_to(stack, email)) == 1


async def count_events(stack) -> int:
    """Events of the module's workspace that a refused request could have written (other
    modules share the stack, and this module's earlier enrollments go on working)."""
    engine = create_engine(stack.database_url, pool_size=1)
    async with engine.connect() as conn:
        count = (await conn.execute(text(
            "SELECT count(*) FROM eventlog.events WHERE workspace_id = :ws"
            " AND type IN ('SequenceCreated', 'ContactCreated', 'ContactEnrolled')"),
            {"ws": stack.workspace["workspace_id"]})).scalar_one()
    await engine.dispose()
    return count


def with_step(**changes):
    return {**SEQUENCE, "steps": [{**SEQUENCE["steps"][0], **changes}]}


BAD_SEQUENCES = [
    ({k: v for k, v in SEQUENCE.items() if k != "sender_email"}, "sender_email"),
    ({**SEQUENCE, "steps": "two"}, "steps"),
    ({**SEQUENCE, "timezone": "Asia/Nowhere"}, "timezone"),
    ({**SEQUENCE, "sender_name": "Sales\r\nBcc: everyone@example.com"}, "sender_name"),
    (with_step(subject="Hi\r\nBcc: everyone@example.com"), "steps[0].subject"),
    (with_step(wait_days=-1), "steps[0].wait_days"),
    (with_step(wait_days="soon"), "steps[0].wait_days"),
    (with_step(body="Hi {{nickname}}"), "steps[0].body"),
    ({**SEQUENCE, "send_policy": {"mode": "send_time", "send_time": "25:00"}},
     "send_policy.send_time"),
]


@pytest.mark.parametrize("body, field", BAD_SEQUENCES)
async def test_bad_sequences_are_refused_naming_the_field_and_write_nothing(stack, api, body, field):
    before = await count_events(stack)
    response = await api.post("/v1/sequences", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]]
    assert await count_events(stack) == before


async def test_bad_contacts_and_enrollments_are_refused_naming_the_field(stack, api):
    before = await count_events(stack)
    sequence_id = str(uuid.uuid4())
    cases = [
        (api.post("/v1/contacts", json={"name": "x"}), 422, "email"),
        (api.post("/v1/contacts", json={"email": "not-an-address"}), 422, "email"),
        (api.post("/v1/contacts", json={"email": "a@b.co", "name": "A\nB"}), 422, "name"),
        (api.post(f"/v1/sequences/{sequence_id}/enrollments", json={}), 422, "contact_id"),
        (api.post(f"/v1/sequences/{sequence_id}/enrollments", json={"contact_id": 7}), 422,
         "contact_id"),
        (api.post(f"/v1/sequences/{sequence_id}/enrollments",
                  json={"contact_id": str(uuid.uuid4())}), 404, "sequence_id"),
        (api.post("/v1/sequences/not-a-uuid/enrollments", json={"contact_id": str(uuid.uuid4())}),
         422, "path.sequence_id"),
        (api.get(f"/v1/enrollments/{uuid.uuid4()}"), 404, "enrollment_id"),
    ]
    for request, status, field in cases:
        response = await request
        assert response.status_code == status, response.text
        assert field in [e["field"] for e in response.json()["errors"]], response.text
    assert await count_events(stack) == before

    real_sequence = (await api.post("/v1/sequences", json=SEQUENCE)).json()["id"]
    unknown_contact = await api.post(f"/v1/sequences/{real_sequence}/enrollments",
                                     json={"contact_id": str(uuid.uuid4())})
    assert unknown_contact.status_code == 404
    assert unknown_contact.json()["errors"][0]["field"] == "contact_id"


async def read_models(stack) -> dict[str, list]:
    engine = create_engine(stack.database_url, pool_size=1)
    try:
        return await projections.read_models(engine, all_projections())
    finally:
        await engine.dispose()


async def settled(stack) -> None:
    """Until every event appended so far is published and handled by every consumer (a step
    still moving through the services would change a live row after it was read)."""
    engine = create_engine(stack.database_url, pool_size=1)
    try:
        # the shared stack holds every module's events: on a loaded machine they take longer
        # than a minute to reach every consumer (a wait, not a timing assertion)
        levels = await until_settled(stack.env()["NATS_URL"], engine, timeout=240)
    finally:
        await engine.dispose()
    assert levels.settled, str(levels)


async def test_imported_contacts_are_edited_opted_out_deleted_and_mailed_like_others(stack, api):
    """An import's new contacts are one event a chunk (ContactsImported): each of them is
    found wherever one contact is loaded, and the rebuild below replays them too."""
    tag = f"imp-{uuid.uuid4().hex[:8]}"
    emails = [f"imp{i}.{tag}@customer.example" for i in range(4)]
    csv_text = "name,company,email,tags,timezone\n" + "".join(
        f"고객{i},회사{i},{email},{tag},America/New_York\n" for i, email in enumerate(emails))
    report = (await api.post("/v1/contacts/import", content=csv_text.encode(),
                             headers={"content-type": "text/csv"})).json()
    assert (report["created"], report["failed"]) == (4, []), report
    listed = (await api.get("/v1/contacts", params={"tag": tag})).json()["items"]
    ids = {c["email"]: c["contact_id"] for c in listed}
    edited, opted_out, deleted, mailed = (ids[email] for email in emails)

    changed = await api.patch(f"/v1/contacts/{edited}", json={"name": "바뀐이름"})
    assert (changed.status_code, changed.json()["name"]) == (200, "바뀐이름"), changed.text
    again = await api.patch(f"/v1/contacts/{edited}", json={"company": "새회사"})
    assert (again.json()["name"], again.json()["company"]) == ("바뀐이름", "새회사")
    out = await api.post(f"/v1/contacts/{opted_out}/opt-out", json={})
    assert (out.status_code, out.json()["opted_out"]) == (200, True), out.text
    assert (await api.delete(f"/v1/contacts/{deleted}")).status_code == 204
    assert (await api.get(f"/v1/contacts/{deleted}")).status_code == 404
    assert (await api.patch(f"/v1/contacts/{deleted}", json={"name": "x"})).status_code == 404

    repeat = (await api.post("/v1/contacts/import", content=csv_text.encode(),
                             headers={"content-type": "text/csv"})).json()
    # the edited one gets its file name back; the deleted one is new again
    assert (repeat["created"], repeat["updated"], repeat["unchanged"]) == (1, 1, 2), repeat

    sequence = {**SEQUENCE, "zone_mode": "contact"}
    sequence_id = (await api.post("/v1/sequences", json=sequence)).json()["id"]
    schedule = await api.get(f"/v1/sequences/{sequence_id}/schedule",
                             params={"contact_id": mailed})
    assert schedule.json()["timezone"] == "America/New_York", schedule.text
    first_step = (await api.get(f"/v1/sequences/{sequence_id}")).json()["steps"][0]["step_id"]

    async def previewed():  # the mailer's copy of contacts, fed by the chunk's event
        answer = await api.post(f"/v1/sequences/{sequence_id}/steps/{first_step}/preview",
                                json={"contact_id": mailed})
        return answer.json() if answer.status_code == 200 else None

    assert (await eventually(previewed, timeout=30))["subject"] == "고객3님, 회사3 견적 건"
    refused = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                             json={"contact_id": opted_out})
    assert refused.status_code == 409, refused.text
    enrolled = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                              json={"contact_id": mailed})
    assert enrolled.status_code == 201, enrolled.text

    async def sent():
        return mail_to(stack, emails[3])

    [mail] = await eventually(sent, timeout=30)
    assert mail["Subject"] == "고객3님, 회사3 견적 건"


def rows_that_differ(live: dict[str, list], rebuilt: dict[str, list]) -> list[str]:
    return [f"{side}: {row!r}" for table in live for side, rows, other in (
        ("live", live[table], rebuilt.get(table, [])), ("rebuilt", rebuilt.get(table, []),
                                                        live[table]))
        for row in rows if row not in other]


async def test_rebuilding_projections_from_the_log_gives_the_same_tables(stack, api):
    await settled(stack)
    live = await read_models(stack)
    assert live["enrollment.enrollments"], "the flow tests above should have left enrollments"
    assert "enrollment-projector: rebuilt from" in await rebuild_projections(stack)
    rebuilt = await read_models(stack)
    assert projections.differences(live, rebuilt) == {}, rows_that_differ(live, rebuilt)


async def test_an_oversized_body_is_refused_before_it_is_read(api):
    huge = {**SEQUENCE, "purpose": "x" * (1024 * 1024 + 1)}
    response = await api.post("/v1/sequences", json=huge)
    assert response.status_code == 413 and response.json()["errors"][0]["field"] == "body"


async def test_a_repeated_post_with_the_same_idempotency_key_returns_the_first_result(api):
    key = {"Idempotency-Key": f"create-{uuid.uuid4()}"}
    first = await api.post("/v1/sequences", json=SEQUENCE, headers=key)
    again = await api.post("/v1/sequences", json=SEQUENCE, headers=key)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    other = await api.post("/v1/sequences", json={**SEQUENCE, "name": "other"}, headers=key)
    assert other.status_code == 422 and other.json()["errors"][0]["field"] == "Idempotency-Key"
    fresh = await api.post("/v1/sequences", json=SEQUENCE)
    assert fresh.json()["id"] != first.json()["id"]
    racing = await asyncio.gather(*(api.post("/v1/contacts", json={
        "email": "race@x.example"}, headers={"Idempotency-Key": "race"}) for _ in range(5)))
    created = [r for r in racing if r.status_code == 201]
    assert len({r.json()["id"] for r in created}) == 1
    assert all(r.status_code in (201, 409) for r in racing)


async def test_every_service_answers_health_and_readiness(stack, api):
    async with httpx.AsyncClient(timeout=10) as client:
        for (name, _), port in stack.health_ports.items():
            alive = await client.get(f"http://127.0.0.1:{port}/healthz")
            ready = await client.get(f"http://127.0.0.1:{port}/readyz")
            assert alive.status_code == 200, name
            assert (ready.status_code, ready.json()) == (
                200, {"status": "ready", "nats": True, "postgresql": True}), name
    assert {name for name, _ in stack.health_ports} == {
        "enrollment", "scheduler", "mailer", "thread-watcher", "webhooks"}
    ready = await api.get("/readyz")
    assert (ready.status_code, ready.json()["enrollment"]) == (200, True)
