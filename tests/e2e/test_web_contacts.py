"""The Contacts screens of the web app, against the whole system: search and filters, the
contact card with every enrollment in every sequence, edit (a refused field changes nothing),
opt out and delete (each asked first), CSV import in three steps with its progress and
per-row report, bad files, another workspace's id, escaping, CSRF."""

from __future__ import annotations

import asyncio
import html
import re
import uuid

import httpx
import pytest

from contracts.views import ContactPage
from services.enrollment.contact_import import MAX_IMPORT_BYTES
from tests.e2e.test_flow import SEQUENCE, new_contact
from tests.support import create_workspace, web_client


@pytest.fixture
async def web(stack):
    async with web_client(stack) as client:
        yield client


def error_of(page: str, field_id: str) -> str:
    """The message shown under a field (`<p class="error" id="f-email-error">`)."""
    found = re.search(rf'<p class="error" id="{field_id}-error"[^>]*>([^<]*)</p>', page)
    assert found, f"no error element for {field_id}"
    return html.unescape(found.group(1)).strip()


async def sequence(api, name: str) -> str:
    made = await api.post("/v1/sequences", json={**SEQUENCE, "name": name})
    assert made.status_code == 201, made.text
    return made.json()["id"]


async def contacts_named(api, q: str) -> list[dict]:
    page = ContactPage.model_validate((await api.get("/v1/contacts", params={"q": q})).json())
    return [c.model_dump(mode="json") for c in page.items]


async def test_search_and_filters_find_by_name_company_email_and_tag(web, api):
    mark = uuid.uuid4().hex[:6]
    await new_contact(api, name=f"박지성{mark}", company="가나상사", tags=["vip"])
    await new_contact(api, name=f"최강{mark}", company=f"다라{mark}전자", status="lead",
                      lists=["seminar"])
    page = await web.get("/contacts", params={"q": mark})
    assert page.status_code == 200
    assert f"박지성{mark}" in page.text and f"최강{mark}" in page.text
    # htmx live search asks for the rows only
    rows = await web.get("/contacts", params={"q": f"다라{mark}", "rows": "1"},
                         headers={"HX-Request": "true"})
    assert "<html" not in rows.text and f"최강{mark}" in rows.text
    assert f"박지성{mark}" not in rows.text
    tagged = await web.get("/contacts", params={"q": mark, "tag": "vip"})
    assert f"박지성{mark}" in tagged.text and f"최강{mark}" not in tagged.text
    listed = await web.get("/contacts", params={"q": mark, "list": "seminar", "status": "lead"})
    assert f"최강{mark}" in listed.text and f"박지성{mark}" not in listed.text
    none = await web.get("/contacts", params={"q": f"nobody-{mark}"})
    assert "No contact matches" in none.text
    # the live search box is wired for htmx
    assert 'hx-trigger="input changed delay:300ms, search"' in page.text


async def test_the_card_shows_every_enrollment_and_enrolls_with_refusals_said(web, api):
    first, second = await sequence(api, "카드 첫째"), await sequence(api, "카드 둘째")
    contact_id, _ = await new_contact(api)
    for sequence_id in (first, second):
        enrolled = await web.post(f"/contacts/{contact_id}/enroll",
                                  data={"csrf_token": web.csrf, "sequence_id": sequence_id})
        assert enrolled.status_code == 303
        assert enrolled.headers["location"] == f"/contacts/{contact_id}?done=enrolled"
    card = await web.get(f"/contacts/{contact_id}")
    assert card.status_code == 200
    assert "카드 첫째" in card.text and "카드 둘째" in card.text
    timelines = set(re.findall(r'href="/enrollments/([0-9a-f-]{36})"', card.text))
    assert len(timelines) == 2
    assert card.text.count('class="badge badge-') >= 2
    again = await web.post(f"/contacts/{contact_id}/enroll",
                           data={"csrf_token": web.csrf, "sequence_id": second})
    assert again.status_code == 409
    assert "already active" in error_of(again.text, "f-sequence_id")


async def test_a_bad_email_is_refused_next_to_its_field_and_nothing_changes(web, api):
    contact_id, email = await new_contact(api)
    form = await web.get(f"/contacts/{contact_id}/edit")
    assert f'value="{email}"' in form.text
    refused = await web.post(f"/contacts/{contact_id}/edit", data={
        "csrf_token": web.csrf, "name": "바뀐 이름", "company": "새 회사", "email": "not-an-email"})
    assert refused.status_code == 422
    assert error_of(refused.text, "f-email") == "Enter an email address, like name@example.com."
    assert 'value="바뀐 이름"' in refused.text  # what was typed stays
    kept = (await api.get(f"/v1/contacts/{contact_id}")).json()
    assert (kept["name"], kept["company"], kept["email"]) == ("김민수", "한빛상사", email)
    in_korean = await web.post(f"/contacts/{contact_id}/edit", data={
        "csrf_token": web.csrf, "email": "x"}, headers={"Accept-Language": "ko"})
    assert error_of(in_korean.text, "f-email") == "name@example.com 같은 이메일 주소를 입력하세요."
    saved = await web.post(f"/contacts/{contact_id}/edit", data={
        "csrf_token": web.csrf, "name": "김민수", "email": email, "tags": "a, b"})
    assert saved.status_code == 303
    assert (await api.get(f"/v1/contacts/{contact_id}")).json()["tags"] == ["a", "b"]


async def test_opt_out_and_delete_ask_first(web, api):
    contact_id, _ = await new_contact(api)
    asked = await web.get(f"/contacts/{contact_id}/opt-out")
    assert asked.status_code == 200 and 'role="alertdialog"' in asked.text
    assert not (await api.get(f"/v1/contacts/{contact_id}")).json()["opted_out"]
    done = await web.post(f"/contacts/{contact_id}/opt-out", data={"csrf_token": web.csrf})
    assert done.status_code == 303
    assert (await api.get(f"/v1/contacts/{contact_id}")).json()["opted_out"]
    card = await web.get(done.headers["location"])
    assert "Opted out" in card.text

    asked = await web.get(f"/contacts/{contact_id}/delete")
    assert asked.status_code == 200 and "cannot be undone" in asked.text
    assert (await api.get(f"/v1/contacts/{contact_id}")).status_code == 200
    deleted = await web.post(f"/contacts/{contact_id}/delete", data={"csrf_token": web.csrf})
    assert deleted.headers["location"] == "/contacts?done=deleted"
    assert "Contact deleted" in (await web.get(deleted.headers["location"])).text
    assert (await api.get(f"/v1/contacts/{contact_id}")).status_code == 404
    assert (await web.get(f"/contacts/{contact_id}")).status_code == 404


async def upload(web, name: str, data: bytes, **headers):
    return await web.post("/contacts/import", data={"csrf_token": web.csrf},
                          files={"file": (name, data, "text/csv")}, headers=headers)


async def import_through_the_pages(web, name: str, data: bytes, change: dict | None = None):
    """Upload, read the mapping found (changing some), import, poll progress until done."""
    uploaded = await upload(web, name, data)
    assert uploaded.status_code == 303, uploaded.text
    mapping_page = await web.get(uploaded.headers["location"])
    assert "We found these columns" in mapping_page.text
    found = dict(html.unescape(v).rsplit(":", 1) for v in
                 re.findall(r'<option value="([^"]*)" selected', mapping_page.text)
                 if ":" in v)
    mapping = {**found, **(change or {})}
    import_id = uploaded.headers["location"].split("/")[3]
    started = await web.post(f"/contacts/import/{import_id}", data={
        "csrf_token": web.csrf, "map": [f"{k}:{v}" for k, v in mapping.items()]})
    assert started.status_code == 303, started.text
    progress = await web.get(started.headers["location"])
    assert progress.status_code == 200
    for _ in range(100):
        partial = await web.get(f"/contacts/import/{import_id}", params={"progress": "1"},
                                headers={"HX-Request": "true"})
        if 'hx-trigger="every 1s"' not in partial.text:
            return found, partial.text
        await asyncio.sleep(0.2)
    raise AssertionError("the import did not finish")


async def test_a_csv_with_korean_headers_imports_with_progress_and_a_report(web, api):
    mark = uuid.uuid4().hex[:6]
    text = ("고객명,회사명,E-mail 주소,태그\n"
            f"김{mark},한빛,kim{mark}@x.example,vip;seoul\n"
            f"이{mark},두리,not-an-email,\n"
            f"박{mark},세울,park{mark}@x.example,\n")
    found, report = await import_through_the_pages(
        web, "고객.csv", text.encode("cp949"), change={"E-mail 주소": "email"})
    assert found["고객명"] == "name" and found["E-mail 주소"] == ""  # not a known header
    assert "Import done" in report
    totals = dict((label, int(n)) for n, label in
                  re.findall(r"<strong>(\d+)</strong> (\w+)", report))
    assert totals == {"created": 2, "updated": 0, "unchanged": 0, "failed": 1}
    row = re.search(r'<tr><td class="num">3</td><td>Email</td><td>([^<]+)</td></tr>', report)
    assert row and "email address" in row.group(1)
    imported = await contacts_named(api, mark)
    assert {c["name"] for c in imported} == {f"김{mark}", f"박{mark}"}
    assert next(c for c in imported if c["name"] == f"김{mark}")["tags"] == ["vip", "seoul"]
    # the same file again, UTF-8 this time: nothing new
    _, again = await import_through_the_pages(web, "고객.csv", text.encode(),
                                              change={"E-mail 주소": "email"})
    assert "<strong>2</strong> unchanged" in again


async def test_bad_files_are_refused_next_to_the_file_field_and_nothing_is_imported(web, api):
    before = len(await contacts_named(api, "x.example"))
    binary = await upload(web, "photo.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(300))
    assert binary.status_code == 422
    assert "not a CSV file" in error_of(binary.text, "f-file")
    encoding = await upload(web, "latin.csv", "이메일\n".encode("utf-16-le"),
                            **{"Accept-Language": "ko"})
    assert encoding.status_code == 422 and error_of(encoding.text, "f-file")
    unknown = await upload(web, "odd.csv", b"email,name\n\xff\xfe\xfd,x\n")
    assert error_of(unknown.text, "f-file") == (
        "The file is neither UTF-8 nor CP949 (EUC-KR) text")
    nothing = await web.post("/contacts/import", data={"csrf_token": web.csrf})
    assert nothing.status_code == 422 and error_of(nothing.text, "f-file")
    assert len(await contacts_named(api, "x.example")) == before


async def test_a_file_over_the_limit_is_refused_with_a_message(web, stack):
    """Sent chunked (no Content-Length), as a browser's could be: the page measures it."""
    boundary = "----seqtest"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n"
            f"{web.csrf}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\";"
            f" filename=\"big.csv\"\r\nContent-Type: text/csv\r\n\r\nemail\r\n").encode()

    async def body():
        yield head
        line = b"someone@x.example\r\n" * 50_000
        for _ in range(MAX_IMPORT_BYTES // len(line) + 2):
            yield line
        yield f"\r\n--{boundary}--\r\n".encode()

    big = await web.post("/contacts/import", content=body(),
                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert big.status_code == 413
    assert error_of(big.text, "f-file") == "The file is over 50 MB. Split it into smaller files."


async def test_a_file_of_a_few_megabytes_goes_through_the_page(web):
    data = b"email\n" + b"".join(b"p%07d@x.example\n" % i for i in range(120_000))
    assert len(data) > 2 * 2**20
    assert (await upload(web, "many.csv", data)).status_code == 303


async def test_another_workspaces_contact_is_not_found(web, stack):
    other = create_workspace(stack, f"Rival {uuid.uuid4().hex[:4]}",
                             f"rival{uuid.uuid4().hex[:6]}@other.example")
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers={
            "Authorization": f"Bearer {other['api_key']}"}) as theirs:
        their_id, _ = await new_contact(theirs)
    for path in (f"/contacts/{their_id}", f"/contacts/{their_id}/edit",
                 f"/contacts/{their_id}/delete", f"/contacts/{uuid.uuid4()}", "/contacts/nope"):
        page = await web.get(path)
        assert page.status_code == 404 and "Not found" in page.text, path
    refused = await web.post(f"/contacts/{their_id}/delete", data={"csrf_token": web.csrf})
    assert refused.status_code == 404
    assert (await web.get("/contacts/import/not-an-import")).status_code == 404


async def test_a_script_for_a_name_is_shown_as_text(web, api):
    mark = uuid.uuid4().hex[:6]
    created = await web.post("/contacts", data={
        "csrf_token": web.csrf, "name": "<script>alert(1)</script>",
        "company": f"evil{mark}", "email": f"evil{mark}@x.example"})
    assert created.status_code == 303
    for page in (await web.get("/contacts", params={"q": f"evil{mark}"}),
                 await web.get(created.headers["location"])):
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "<script>alert(1)" not in page.text


async def test_a_post_without_its_csrf_token_is_refused(web, api):
    contact_id, _ = await new_contact(api)
    for path, data in ((f"/contacts/{contact_id}/delete", {}),
                       ("/contacts", {"email": "csrf@x.example"}),
                       (f"/contacts/{contact_id}/delete", {"csrf_token": "forged"})):
        assert (await web.post(path, data=data)).status_code == 403
    assert (await api.get(f"/v1/contacts/{contact_id}")).status_code == 200
    upload_without = await web.post("/contacts/import",
                                    files={"file": ("a.csv", b"email\na@x.example\n")})
    assert upload_without.status_code == 403


async def test_pages_read_in_korean(stack):
    async with web_client(stack, language="ko") as korean:
        listed = await korean.get("/contacts")
        assert "고객" in listed.text and "새 고객" in listed.text
        assert "가져올 CSV" in (await korean.post(
            "/contacts/import", data={"csrf_token": korean.csrf})).text


# --- the contact's timezone (issue 14, item 3) ---------------------------------------------


async def test_the_api_keeps_a_contacts_timezone_and_refuses_an_unknown_one(stack, api):
    from tests.e2e.test_replies import query

    contact_id, email = await new_contact(api, timezone="America/New_York")
    assert (await api.get(f"/v1/contacts/{contact_id}")).json()["timezone"] == "America/New_York"
    unknown = await api.post("/v1/contacts", json={"email": f"z{email}", "timezone": "Seoul"})
    assert unknown.status_code == 422
    assert [e["field"] for e in unknown.json()["errors"]] == ["timezone"]
    assert await contacts_named(api, f"z{email}") == []  # nothing written
    changed = await api.patch(f"/v1/contacts/{contact_id}", json={"timezone": "Asia/Seoul"})
    assert changed.status_code == 200 and changed.json()["timezone"] == "Asia/Seoul"
    refused = await api.patch(f"/v1/contacts/{contact_id}", json={"timezone": "../../etc/passwd"})
    assert refused.status_code == 422
    assert [e["field"] for e in refused.json()["errors"]] == ["timezone"]
    assert (await api.get(f"/v1/contacts/{contact_id}")).json()["timezone"] == "Asia/Seoul"
    listed = await api.get("/v1/contacts", params={"q": email})
    assert [c["timezone"] for c in listed.json()["items"]] == ["Asia/Seoul"]
    # the enrollment carries the contact's zone for the scheduler
    sequence_id = await sequence(api, "시간대 고객")
    enrolled = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                              json={"contact_id": contact_id})
    assert enrolled.status_code == 201, enrolled.text
    cleared = await api.patch(f"/v1/contacts/{contact_id}", json={"timezone": ""})
    assert cleared.json()["timezone"] is None
    rows = await query(stack, "SELECT type, data FROM eventlog.events WHERE stream_id IN"
                       " (:enrollment, :contact) AND type IN ('ContactEnrolled', 'ContactUpdated')"
                       " ORDER BY position", enrollment=f"enrollment-{enrolled.json()['id']}",
                       contact=f"contact-{contact_id}")
    assert [(t, d.get("contact_timezone", d.get("changes"))) for t, d in rows] == [
        ("ContactUpdated", {"timezone": "Asia/Seoul"}),
        ("ContactEnrolled", "Asia/Seoul"),
        ("ContactUpdated", {"timezone": ""}),
    ]


async def test_a_csv_timezone_is_imported_inferred_or_refused_per_row(web, api):
    mark = uuid.uuid4().hex[:6]
    known, _ = await new_contact(api, name=f"known{mark}", email=f"k{mark}@x.example")
    text_ = ("email,Country,State,phone,Time zone\n"
             f"a{mark}@x.example,대한민국,,,\n"
             f"b{mark}@x.example,US,CA,,\n"
             f"c{mark}@x.example,US,,,\n"
             f"d{mark}@x.example,,,+81 3-1234-5678,\n"
             f"e{mark}@x.example,,,,Mars/Olympus\n"
             f"k{mark}@x.example,Japan,,,\n")
    found, report = await import_through_the_pages(web, "zones.csv", text_.encode())
    assert (found["Country"], found["State"], found["Time zone"]) == (
        "country", "region", "timezone")
    totals = dict((label, int(n)) for n, label in
                  re.findall(r"<strong>(\d+)</strong> (\w+)", report))
    assert totals == {"created": 4, "updated": 1, "unchanged": 0, "failed": 1}
    assert ('<tr><td class="num">6</td><td>Timezone</td>'
            '<td>Unknown timezone: use an IANA name such as Asia/Seoul.</td></tr>') in report
    zones = {c["email"][0]: c["timezone"] for c in await contacts_named(api, mark)}
    assert zones == {"a": "Asia/Seoul", "b": "America/Los_Angeles", "c": None, "d": "Asia/Tokyo",
                     "k": "Asia/Tokyo"}  # a known contact gets the zone its row decides
    assert (await api.get(f"/v1/contacts/{known}")).json()["name"] == f"known{mark}"


async def test_the_card_shows_the_contacts_zone_and_time_there_and_the_form_edits_it(web, api):
    contact_id, email = await new_contact(api, timezone="Asia/Tokyo")
    card = (await web.get(f"/contacts/{contact_id}")).text.replace("\u202f", " ")  # CLDR's
    # the card follows the stack's clock, which other modules of the shared stack moved
    assert "Asia/Tokyo" in card and " there" in card, card
    listed = await web.get("/contacts", params={"q": email})
    assert "Asia/Tokyo" in listed.text
    form = await web.get(f"/contacts/{contact_id}/edit")
    assert 'value="Asia/Tokyo"' in form.text and '<option value="Europe/Berlin">' in form.text
    refused = await web.post(f"/contacts/{contact_id}/edit", data={
        "csrf_token": web.csrf, "email": email, "timezone": "Tokyo"},
        headers={"Accept-Language": "ko"})
    assert refused.status_code == 422
    assert error_of(refused.text, "f-timezone") == (
        "알 수 없는 시간대입니다. 목록에서 고르세요 (예: Asia/Seoul).")
    assert (await api.get(f"/v1/contacts/{contact_id}")).json()["timezone"] == "Asia/Tokyo"
    cleared = await web.post(f"/contacts/{contact_id}/edit", data={
        "csrf_token": web.csrf, "email": email, "timezone": ""})
    assert cleared.status_code == 303
    assert (await api.get(f"/v1/contacts/{contact_id}")).json()["timezone"] is None
    made = await web.post("/contacts", data={"csrf_token": web.csrf, "email": f"n{email}",
                                             "timezone": ""})
    assert made.status_code == 303  # an empty zone is none, not an error


async def test_why_an_enrollment_ended_reads_in_korean_on_the_card(stack, api):
    """Our own reasons (opted out) are translated; the API keeps its English."""
    sequence_id = await sequence(api, "ended in Korean")
    contact_id, _ = await new_contact(api)
    enrolled = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                              json={"contact_id": contact_id})
    assert enrolled.status_code == 201, enrolled.text
    assert (await api.post(f"/v1/contacts/{contact_id}/opt-out")).status_code == 200
    view = (await api.get(f"/v1/enrollments/{enrolled.json()['id']}")).json()
    assert view["ended_reason"] == "opted out"
    async with web_client(stack, language="ko") as korean:
        card = html.unescape((await korean.get(f"/contacts/{contact_id}")).text)
    hint = re.search(r'<div class="hint">([^<]*)</div>', card)
    assert hint and hint.group(1) == "수신 거부", card


async def test_the_card_says_when_the_contacts_address_is_on_the_suppression_list(stack, api):
    domain = f"blocked{uuid.uuid4().hex[:6]}.example"
    contact_id, _ = await new_contact(api, email=f"kim@{domain}")
    card = (await api.get(f"/v1/contacts/{contact_id}")).json()
    assert card["suppressed"] is None
    added = await api.post("/v1/suppressions", json={"value": domain})
    assert added.status_code in (200, 201), added.text
    card = (await api.get(f"/v1/contacts/{contact_id}")).json()
    assert (card["suppressed"]["value"], card["suppressed"]["kind"]) == (domain, "domain")
    async with web_client(stack, language="ko") as korean:
        page = html.unescape((await korean.get(f"/contacts/{contact_id}")).text)
    assert "수신 차단 목록에 있음" in page and f"도메인 전체 {domain}" in page, page
    listed = (await api.get("/v1/contacts", params={"q": domain})).json()["items"]
    assert "suppressed" not in listed[0] or listed[0]["suppressed"] is None  # one card only
