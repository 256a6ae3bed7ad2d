"""The enrollment service end to end: contacts, CSV import, bulk enrollment, the enrollee table
and the timeline, through the gateway with every service running."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import pytest

from tests.e2e.test_flow import SEQUENCE, new_contact
from tests.support import eventually


async def new_sequence(api, **changes) -> str:
    response = await api.post("/v1/sequences", json={**SEQUENCE, **changes})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


async def test_contacts_are_created_updated_searched_and_softly_deleted(api):
    tag = unique("vip")
    contact_id, email = await new_contact(api, tags=[tag, " ", tag], status="lead")
    contact = (await api.get(f"/v1/contacts/{contact_id}")).json()
    assert (contact["tags"], contact["status"], contact["opted_out"]) == ([tag], "lead", False)

    taken = await api.post("/v1/contacts", json={"email": email.upper()})
    assert taken.status_code == 409 and taken.json()["errors"][0]["field"] == "email"

    changed = await api.patch(f"/v1/contacts/{contact_id}", json={"company": "새회사", "status": "customer"})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["company"], changed.json()["name"]) == ("새회사", "김민수")

    found = (await api.get("/v1/contacts", params={"tag": tag})).json()
    assert [c["contact_id"] for c in found["items"]] == [contact_id]
    assert (await api.get("/v1/contacts", params={"q": email[:12]})).json()["items"][0]["email"] == email

    assert (await api.delete(f"/v1/contacts/{contact_id}")).status_code == 204
    assert (await api.get(f"/v1/contacts/{contact_id}")).status_code == 404
    assert (await api.get("/v1/contacts", params={"tag": tag})).json()["items"] == []
    again = await api.post("/v1/contacts", json={"email": email})  # the address is free again
    assert again.status_code == 201


async def test_contact_pages_follow_the_cursor_without_repeats(api):
    listing = unique("page")
    for i in range(7):
        await new_contact(api, lists=[listing], name=f"n{i}")
    seen, cursor = [], None
    while True:
        params = {"list": listing, "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/v1/contacts", params=params)).json()
        seen += [c["name"] for c in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == [f"n{i}" for i in range(7)]
    bad = await api.get("/v1/contacts", params={"cursor": "garbage!"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "cursor"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp949"])
async def test_csv_imports_upsert_by_email_in_every_excel_encoding(api, encoding):
    tag = unique("csv")
    first, second = f"{unique('a')}@x.example", f"{unique('b')}@x.example"
    csv_text = (
        "고객명,회사명,이메일,태그\n"
        f"김민수,한빛상사,{first},{tag}\n"
        f"이영희,바다물산,{second},{tag};vip\n"
        f"박철수,산들,not-an-email,{tag}\n"
        f"중복,회사,{first.upper()},{tag}\n"
    )
    response = await api.post("/v1/contacts/import", content=csv_text.encode(encoding),
                              headers={"content-type": "text/csv"})
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["created"], report["updated"]) == (2, 0)
    assert [(f["row"], f["field"]) for f in report["failed"]] == [(4, "email"), (5, "email")]
    names = {c["name"] for c in (await api.get("/v1/contacts", params={"tag": tag})).json()["items"]}
    assert names == {"김민수", "이영희"}

    again = f"고객명,회사명,이메일\n김민수,한빛상사,{first}\n이영희,새회사,{second}\n"
    report = (await api.post("/v1/contacts/import", content=again.encode(encoding),
                             headers={"content-type": "text/csv"})).json()
    assert (report["created"], report["updated"], report["unchanged"]) == (0, 1, 1)


async def test_bad_csv_files_are_refused_whole(api):
    def post(body: bytes, content_type="text/csv", **params):
        return api.post("/v1/contacts/import", content=body, headers={"content-type": content_type},
                        params=params)

    cases = [
        (post(b"name,company\nx,y\n"), 422, "mapping"),
        (post("이름\n".encode("utf-16")), 422, "file"),
        (post(b"Mail\nx@y.co\n", map="Mail:e-mail"), 422, "mapping"),
        (post(b"email\nx@y.co\n", content_type="application/json"), 415, "content-type"),
        (post(b"x" * (50 * 1024 * 1024 + 1)), 413, "body"),
    ]
    for request, status, field in cases:
        response = await request
        assert response.status_code == status, response.text
        assert response.json()["errors"][0]["field"] == field


async def test_bulk_enrollment_counts_enrolled_skipped_and_opted_out(stack, api):
    tag = unique("segment")
    ids = [(await new_contact(api, tags=[tag]))[0] for _ in range(5)]
    sequence_id = await new_sequence(api)
    await api.post(f"/v1/sequences/{sequence_id}/enrollments", json={"contact_id": ids[0]})
    await api.post(f"/v1/contacts/{ids[1]}/opt-out", json={"reason": "asked by phone"})

    result = await api.post(f"/v1/sequences/{sequence_id}/enrollments/bulk",
                            json={"segment": {"tag": tag}})
    assert result.status_code == 200, result.text
    assert result.json() == {"enrolled": 3, "skipped_active": 1, "skipped_ended": 0,
                             "excluded_opted_out": 1, "refused_bounced": 0,
                             "excluded_suppressed": 0}
    again = (await api.post(f"/v1/sequences/{sequence_id}/enrollments/bulk",
                            json={"segment": {"tag": tag}})).json()
    assert (again["enrolled"], again["skipped_active"]) == (0, 4)
    detail = (await api.get(f"/v1/sequences/{sequence_id}")).json()
    assert detail["headline"] == "4 enrolled · live"
    bad = await api.post(f"/v1/sequences/{sequence_id}/enrollments/bulk", json={"segment": {}})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "segment"


async def test_fifty_identical_enrollment_requests_make_exactly_one_enrollment(api):
    sequence_id = await new_sequence(api)
    contact_id, _ = await new_contact(api)
    responses = await asyncio.gather(*(
        api.post(f"/v1/sequences/{sequence_id}/enrollments", json={"contact_id": contact_id})
        for _ in range(50)))
    assert sorted(r.status_code for r in responses) == [201] + [409] * 49
    page = (await api.get(f"/v1/sequences/{sequence_id}/enrollments")).json()
    assert len(page["items"]) == 1


async def test_opting_out_stops_every_active_enrollment_and_reenrolling_needs_asking(stack, api):
    contact_id, email = await new_contact(api)
    two_steps = [SEQUENCE["steps"][0], {**SEQUENCE["steps"][1], "wait_days": 30}]
    sequences = [await new_sequence(api, steps=two_steps) for _ in range(2)]
    enrollments = [(await api.post(f"/v1/sequences/{s}/enrollments",
                                   json={"contact_id": contact_id})).json()["id"] for s in sequences]
    opted = await api.post(f"/v1/contacts/{contact_id}/opt-out")
    assert opted.json()["opted_out"] is True
    for enrollment_id in enrollments:
        view = (await api.get(f"/v1/enrollments/{enrollment_id}")).json()
        assert (view["status"], view["ended_reason"]) == ("stopped", "opted out")
        assert view["ended_reason_text"] == {"message": "opted out", "values": {}}
    refused = await api.post(f"/v1/sequences/{sequences[0]}/enrollments",
                             json={"contact_id": contact_id, "reenroll": True})
    assert refused.status_code == 409 and "opted out" in refused.json()["detail"]

    other, _ = await new_contact(api)
    first = (await api.post(f"/v1/sequences/{sequences[0]}/enrollments",
                            json={"contact_id": other})).json()["id"]
    stopped = await api.post(f"/v1/enrollments/{first}/stop", json={"reason": "talked live"})
    assert (stopped.json()["status"], stopped.json()["ended_reason"]) == ("stopped", "talked live")
    assert stopped.json()["ended_reason_text"] is None  # a person's own words stay as written
    plain = await api.post(f"/v1/sequences/{sequences[0]}/enrollments", json={"contact_id": other})
    assert plain.status_code == 409 and "reenroll" in plain.json()["detail"]
    second = await api.post(f"/v1/sequences/{sequences[0]}/enrollments",
                            json={"contact_id": other, "reenroll": True})
    assert second.status_code == 201 and second.json()["id"] != first


async def test_enrolling_into_a_paused_or_archived_sequence_is_refused(api):
    contact_id, _ = await new_contact(api)
    for action in ("pause", "archive"):
        sequence_id = await new_sequence(api)
        await api.post(f"/v1/sequences/{sequence_id}/{action}")
        response = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                                  json={"contact_id": contact_id})
        assert response.status_code == 409
        assert response.json()["errors"][0]["field"] == "sequence_id"


async def test_the_enrollee_table_filters_sorts_and_pages_and_the_timeline_explains(stack, api):
    tag = unique("table")
    names = ["다", "가", "나"]
    for name in names:
        await new_contact(api, tags=[tag], name=name)
    two_steps = [SEQUENCE["steps"][0], {**SEQUENCE["steps"][1], "wait_days": 30}]
    sequence_id = await new_sequence(api, steps=two_steps)
    await api.post(f"/v1/sequences/{sequence_id}/enrollments/bulk", json={"segment": {"tag": tag}})

    async def all_sent():
        items = (await api.get(f"/v1/sequences/{sequence_id}/enrollments")).json()["items"]
        return items if all(i["sends"] == 1 and i["next_due_at"] for i in items) else None

    await eventually(all_sent, timeout=30)
    by_name = (await api.get(f"/v1/sequences/{sequence_id}/enrollments",
                             params={"sort": "contact_name", "limit": 2})).json()
    assert [i["contact_name"] for i in by_name["items"]] == ["가", "나"]
    rest = (await api.get(f"/v1/sequences/{sequence_id}/enrollments",
                          params={"sort": "contact_name", "limit": 2,
                                  "cursor": by_name["next_cursor"]})).json()
    assert [i["contact_name"] for i in rest["items"]] == ["다"] and rest["next_cursor"] is None
    stopped_one = by_name["items"][0]["enrollment_id"]
    await api.post(f"/v1/enrollments/{stopped_one}/stop")
    only_stopped = (await api.get(f"/v1/sequences/{sequence_id}/enrollments",
                                  params={"status": "stopped"})).json()["items"]
    assert [i["enrollment_id"] for i in only_stopped] == [stopped_one]
    counts = (await api.get(f"/v1/sequences/{sequence_id}")).json()["counts"]
    assert (counts["active"], counts["stopped"]) == (2, 1)

    timeline = (await api.get(f"/v1/enrollments/{stopped_one}/timeline")).json()["entries"]
    types = [e["type"] for e in timeline]
    assert types[:2] == ["ContactEnrolled", "StepScheduled"]
    assert {"StepDue", "EmailSent", "EnrollmentStepCompleted"} <= set(types)
    assert types[-1] == "EnrollmentStopped" and "stopped" in timeline[-1]["summary"]
    sent = next(e for e in timeline if e["type"] == "EmailSent")
    due = next(e for e in timeline if e["type"] == "StepDue")
    assert sent["causation_id"] == due["event_id"]  # the email went out because the step fell due
    assert sent["correlation_id"] == timeline[0]["correlation_id"]  # one conversation from enrollment
    assert (await api.get(f"/v1/enrollments/{uuid.uuid4()}/timeline")).status_code == 404


async def test_the_command_line_imports_a_cp949_file_in_chunks_with_progress(stack, api, tmp_path):
    import os
    import sys

    listing = unique("cli")
    rows = [f"고객{i},회사{i},cli{i}.{listing}@x.example,{listing}" for i in range(2500)]
    rows.insert(10, "깨진,행,not-an-email,x")
    path = tmp_path / "leads.csv"
    path.write_bytes(("고객명,회사명,이메일,리스트\n" + "\n".join(rows) + "\n").encode("cp949"))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sequences.cli", "contacts", "import", str(path),
        "--workspace", stack.workspace["workspace_id"], env={**os.environ, **stack.env()},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert "read 2,501 of 2,501 lines (100%)" in err.decode()
    assert "created 2,500, updated 0, unchanged 0, failed 1" in out.decode()
    assert "line 12: email" in out.decode()
    page = (await api.get("/v1/contacts", params={"list": listing, "limit": 500})).json()
    assert len(page["items"]) == 500 and page["next_cursor"]


async def test_search_finds_any_part_of_a_name_company_or_email_ignoring_case(api):
    listing = unique("search")
    hong, _ = await new_contact(api, lists=[listing], name="홍길동", company="Ünicode Widgets")
    mixed, mixed_email = await new_contact(api, lists=[listing], name="Lee", company="가나")
    sale, _ = await new_contact(api, lists=[listing], name="50%_off", company="다라")
    await new_contact(api, lists=[listing], name="50xyoff", company="마바")

    async def found(q: str) -> set[str]:
        page = (await api.get("/v1/contacts", params={"q": q, "list": listing})).json()
        return {c["contact_id"] for c in page["items"]}

    assert await found("길동") == {hong}  # in the middle of a Korean name
    assert await found("ünicode wid") == {hong}  # the company, another case
    assert await found(mixed_email[3:11].upper()) == {mixed}  # part of the email, upper case
    assert await found("0%_o") == {sale}  # % and _ are themselves, not wildcards
    assert await found("나다") == set()  # never across two fields (가나 then 다라 is no match)
    assert await found("Lee가") == set()


async def test_enrollee_pages_by_last_activity_return_every_row_exactly_once(stack, api):
    tag = unique("activity")
    for i in range(7):
        await new_contact(api, tags=[tag], name=f"활동{i}")
    sequence_id = await new_sequence(api, steps=[{**SEQUENCE["steps"][0], "wait_days": 30}])
    enrolled = await api.post(f"/v1/sequences/{sequence_id}/enrollments/bulk",
                              json={"segment": {"tag": tag}})
    assert enrolled.json()["enrolled"] == 7
    everyone = (await api.get(f"/v1/sequences/{sequence_id}/enrollments")).json()["items"]
    for item in everyone[1:6:2]:  # three stopped one after another: newer activity each
        await api.post(f"/v1/enrollments/{item['enrollment_id']}/stop")

    async def pages(**params) -> list[dict]:
        seen, cursor = [], None
        while True:
            query = {**params, "limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await api.get(f"/v1/sequences/{sequence_id}/enrollments", params=query)).json()
            seen += page["items"]
            if not (cursor := page["next_cursor"]):
                return seen

    newest_first = await pages(sort="last_activity_at", descending="true")
    ids = [i["enrollment_id"] for i in newest_first]
    assert sorted(ids) == sorted(i["enrollment_id"] for i in everyone)  # all, none twice
    keys = [(datetime.fromisoformat(i["last_activity_at"]), uuid.UUID(i["enrollment_id"]))
            for i in newest_first]
    assert keys == sorted(keys, reverse=True)
    assert {i["status"] for i in newest_first[:3]} == {"stopped"}
    oldest_first = await pages(sort="last_activity_at")
    assert [i["enrollment_id"] for i in oldest_first] == ids[::-1]
    active = await pages(status="active")
    assert len(active) == 4 and len({i["enrollment_id"] for i in active}) == 4
    enrolled_at = [datetime.fromisoformat(i["enrolled_at"]) for i in active]
    assert enrolled_at == sorted(enrolled_at)
