"""The sequence detail (Steps, Enrollees, Schedule, Settings) and the Enroll screen (pick
contacts, Segment) against the running system: counts per step and per status, the enrollee
rows as htmx polls them (a reply, a clock move), stopping one and several after asking,
filter and sort, the segment's dry-run count, another workspace's ids, escaping, CSRF, Korean;
and the new queries (GetStepStats, PreviewSegment) over the bus, with the rebuild giving the
same step counts."""

from __future__ import annotations

import html
import re
import uuid

import pytest

from contracts import commands as c
from sequences.messaging.nats import connect
from services.gateway import bus
from sequences import projections
from tests.e2e.test_flow import (SEQUENCE, mail_to, new_contact, read_models, rows_that_differ,
                                 settled)
from tests.e2e.test_replies import query as sql
from tests.support import (create_workspace, drop_reply, eventually, nothing_pending,
                           rebuild_projections, web_client)

SCRIPT = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
HTMX = {"HX-Request": "true"}


def main_of(page: str) -> str:
    return page[page.index("<main"):page.index("</main>")]


async def new_sequence(api, **fields) -> str:
    created = await api.post("/v1/sequences", json={**SEQUENCE, **fields})
    assert created.status_code == 201, created.text
    return created.json()["id"]


async def enrolled(api, sequence_id: str, contact_id: str) -> str:
    answer = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                            json={"contact_id": contact_id})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


async def first_mail(stack, email: str):
    async def sent():
        return mail_to(stack, email)
    return (await eventually(sent, timeout=30))[0]


async def status_of(api, enrollment_id: str) -> str:
    return (await api.get(f"/v1/enrollments/{enrollment_id}")).json()["status"]


def row_of(rows_html: str, enrollment_id: str) -> str:
    """The <tr> of one enrollment in the rows partial."""
    start = rows_html.rindex("<tr", 0, rows_html.index(f'value="{enrollment_id}"')
                             if f'value="{enrollment_id}"' in rows_html
                             else rows_html.index(f"/enrollments/{enrollment_id}"))
    return rows_html[start:rows_html.index("</tr>", start)]


def counts_shown(page: str, prefix: str) -> dict[str, int]:
    """The segment counts a page shows (`<dd id="count-enrolled">2</dd>`, ...)."""
    return {name: int(n) for name, n in re.findall(rf'id="{prefix}-([a-z-]+)">(\d+)<', page)}


def rows_url(sequence_id: str, **params) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"status": "", "sort": "enrolled_at",
                                              "descending": "0", **params}.items())
    return f"/sequences/{sequence_id}/enrollees?{query}"


@pytest.fixture(scope="module")
def other(stack) -> dict:
    return create_workspace(stack, "Rival Detail Co", "rival@detail.example")


async def test_the_detail_tabs_show_the_sequence_and_its_counts(stack, api):
    sequence_id = await new_sequence(api)
    contact_id, email = await new_contact(api, company="한빛상사")
    enrollment_id = await enrolled(api, sequence_id, contact_id)
    await first_mail(stack, email)

    async def sent_counted():
        return (await api.get(f"/v1/enrollments/{enrollment_id}")).json()["sends"] == 1
    await eventually(sent_counted)

    async with web_client(stack) as browser:
        steps = await browser.get(f"/sequences/{sequence_id}")
        assert steps.status_code == 200
        page = main_of(steps.text)
        assert SEQUENCE["name"] in page and "1 enrolled · live" in page
        assert 'aria-current="page">Steps</a>' in page
        assert re.search(r'<span class="count">1</span> Active', page)
        # step 1: sent once; step 2: not yet
        sent = re.findall(r"<dt>Sent</dt><dd>(\d+)</dd>", page)
        assert sent == ["1", "0"]
        assert "Re: the previous email" in page  # step 2 has no subject: same thread

        enrollees = main_of((await browser.get(f"/sequences/{sequence_id}?tab=enrollees")).text)
        assert 'aria-current="page">Enrollees</a>' in enrollees
        assert f'href="/enrollments/{enrollment_id}"' in enrollees and "한빛상사" in enrollees
        assert "Step 2 of 2" in enrollees and 'hx-trigger="every 3s, clock-moved from:body"' in enrollees

        schedule = await browser.get(f"/sequences/{sequence_id}?tab=schedule"
                                     "&start=2030-03-04T09:30")
        table = main_of(schedule.text)
        assert schedule.status_code == 200 and 'value="2030-03-04T09:30"' in table
        # Asia/Seoul 09:30 is 00:30 UTC; step 2 two days later
        assert re.search(r"Mar 4, 2030, 12:30:00\sAM", table)
        assert re.search(r"Mar 6, 2030, 12:30:00\sAM", table)
        wrong = await browser.get(f"/sequences/{sequence_id}?tab=schedule&start=soon")
        assert wrong.status_code == 422 and 'aria-invalid="true"' in wrong.text

        settings = main_of((await browser.get(f"/sequences/{sequence_id}?tab=settings")).text)
        assert f'href="/sequences/{sequence_id}/edit"' in settings

    async with web_client(stack, language="ko") as browser:
        korean = main_of((await browser.get(f"/sequences/{sequence_id}")).text)
        assert "1명 등록" in korean and "발송" in korean and "단계" in korean


async def test_enrolling_by_tag_counts_before_and_after(stack, api):
    sequence_id = await new_sequence(api)
    tag = f"t{uuid.uuid4().hex[:8]}"
    fresh = [await new_contact(api, tags=[tag]) for _ in range(2)]
    active_id, _ = await new_contact(api, tags=[tag])
    await enrolled(api, sequence_id, active_id)
    opted_id, _ = await new_contact(api, tags=[tag])
    assert (await api.post(f"/v1/contacts/{opted_id}/opt-out", json={})).status_code in (200, 201)

    async with web_client(stack) as browser:
        preview = await browser.get(f"/sequences/{sequence_id}/enroll",
                                    params={"tab": "segment", "tag": tag, "preview": "1"})
        page = main_of(preview.text)
        assert preview.status_code == 200
        assert counts_shown(page, "count") == {"enrolled": 2, "skipped-active": 1, "opted-out": 1,
                                                   "suppressed": 0}
        assert "Enroll 2</button>" in page
        # nothing written by counting
        assert (await api.get(f"/v1/sequences/{sequence_id}")).json()["enrolled"] == 1

        done = await browser.post(f"/sequences/{sequence_id}/enroll/segment", data={
            "csrf_token": browser.csrf, "segment.tag": tag})
        result = main_of(done.text)
        assert done.status_code == 200
        assert counts_shown(result, "result") == {
            "enrolled": 2, "skipped-active": 1, "opted-out": 1, "suppressed": 0}
        assert (await api.get(f"/v1/sequences/{sequence_id}")).json()["enrolled"] == 3

        again = main_of((await browser.get(f"/sequences/{sequence_id}/enroll", params={
            "tab": "segment", "tag": tag, "preview": "1"})).text)
        assert counts_shown(again, "count") == {"enrolled": 0, "skipped-active": 3, "opted-out": 1,
                                                 "suppressed": 0}

        htmx = await browser.post(f"/sequences/{sequence_id}/enroll/segment", headers=HTMX,
                                  data={"csrf_token": browser.csrf, "segment.tag": tag})
        assert htmx.text.lstrip().startswith('<div id="segment-panel">')  # the panel only

        neither = await browser.get(f"/sequences/{sequence_id}/enroll", params={
            "tab": "segment", "preview": "1"})
        assert neither.status_code == 422 and "Give a status, a tag or a list" in neither.text
        both = await browser.post(f"/sequences/{sequence_id}/enroll/segment", data={
            "csrf_token": browser.csrf, "segment.tag": tag, "segment.all": "true"})
        assert both.status_code == 422
    assert len(fresh) == 2


async def test_picked_contacts_are_enrolled_and_each_says_how_it_went(stack, api):
    sequence_id = await new_sequence(api)
    new_id, _ = await new_contact(api, name="새 고객")
    active_id, _ = await new_contact(api, name="이미 진행 중")
    await enrolled(api, sequence_id, active_id)
    opted_id, _ = await new_contact(api, name="수신 거부")
    await api.post(f"/v1/contacts/{opted_id}/opt-out", json={})
    async with web_client(stack) as browser:
        search = main_of((await browser.get(f"/sequences/{sequence_id}/enroll",
                                            params={"q": "새 고객"})).text)
        assert f'value="{new_id}"' in search and f'value="{active_id}"' not in search
        answer = await browser.post(f"/sequences/{sequence_id}/enroll/contacts", data={
            "csrf_token": browser.csrf, "contact_id": [new_id, active_id, opted_id]})
        page = main_of(answer.text)
        assert answer.status_code == 200
        assert re.search(r'outcome-enrolled">\s*<td>새 고객', page)
        assert re.search(r'outcome-skipped_active">\s*<td>이미 진행 중', page)
        assert re.search(r'outcome-excluded_opted_out">\s*<td>수신 거부', page)
        assert "1 of the contacts you picked was enrolled." in page


async def test_the_rows_show_a_reply_and_a_clock_move_by_themselves(stack, api):
    sequence_id = await new_sequence(api)
    # at companies of their own: a colleague's reply would stop the other (issue 13 item 4)
    (replying, replying_email), (waiting, waiting_email) = [
        await new_contact(api, company=company) for company in ("한빛상사", "가나전자")]
    replied_id = await enrolled(api, sequence_id, replying)
    done_id = await enrolled(api, sequence_id, waiting)
    first = await first_mail(stack, replying_email)
    await first_mail(stack, waiting_email)

    async with web_client(stack) as browser:
        rows = (await browser.get(rows_url(sequence_id), headers=HTMX)).text
        assert "Active" in row_of(rows, replied_id) and "<main" not in rows
        assert 'id="detail-counts"' in rows and 'hx-swap-oob="true"' in rows  # header too

        await drop_reply(stack, first["Message-ID"], "네 좋습니다")

        async def replied_shows():
            rows = (await browser.get(rows_url(sequence_id), headers=HTMX)).text
            return "badge-replied" in row_of(rows, replied_id) and rows
        rows = await eventually(replied_shows, timeout=30)
        assert "badge-active" in row_of(rows, done_id)
        await nothing_pending(stack.database_url, replied_id)

        assert (await api.post("/v1/dev/clock/advance", json={"by": "2d"})).status_code == 200

        async def done_shows():
            rows = (await browser.get(rows_url(sequence_id), headers=HTMX)).text
            return "badge-done" in row_of(rows, done_id) and rows
        rows = await eventually(done_shows, timeout=30)
        assert "badge-replied" in row_of(rows, replied_id)
        assert "All 2 steps" in row_of(rows, done_id)

        steps = main_of((await browser.get(f"/sequences/{sequence_id}")).text)
        assert re.findall(r"<dt>Sent</dt><dd>(\d+)</dd>", steps) == ["2", "1"]
        assert re.findall(r"<dt>Replied</dt><dd>(\d+)</dd>", steps) == ["1", "0"]

    async with await connect(stack.env()["NATS_URL"], "tests") as nc:
        stats = await bus.ask(nc, uuid.UUID(stack.workspace["workspace_id"]), c.GetStepStats,
                              sequence_id=sequence_id)
    assert [(s["sent"], s["replied"], s["bounced"], s["step_index"]) for s in stats["steps"]] == [
        (2, 1, 0, 0), (1, 0, 0, 1)]


async def test_stopping_one_asks_first(stack, api):
    sequence_id = await new_sequence(api)
    contact_id, _ = await new_contact(api)
    enrollment_id = await enrolled(api, sequence_id, contact_id)
    async with web_client(stack) as browser:
        rows = (await browser.get(rows_url(sequence_id), headers=HTMX)).text
        stop_link = re.search(r'href="(/sequences/[^"]+/stop\?enrollment_id=[^"]+)"',
                              row_of(rows, enrollment_id))[1].replace("&amp;", "&")
        confirm = await browser.get(stop_link)
        assert confirm.status_code == 200 and "Stop 1 enrollee?" in confirm.text
        assert 'role="alertdialog"' in confirm.text
        assert await status_of(api, enrollment_id) == "active"  # asking changed nothing
        stopped = await browser.post(f"/sequences/{sequence_id}/stop", data={
            "csrf_token": browser.csrf, "enrollment_id": enrollment_id})
        assert stopped.status_code == 303
        assert stopped.headers["location"].endswith("stopped=1")
        assert await status_of(api, enrollment_id) == "stopped"
        back = await browser.get(stopped.headers["location"])
        assert "1 enrollee stopped." in back.text
        rows = (await browser.get(rows_url(sequence_id), headers=HTMX)).text
        assert "badge-stopped" in row_of(rows, enrollment_id)
        assert f'value="{enrollment_id}"' not in rows  # nothing more to stop: no checkbox


async def test_stopping_several_shows_how_many_and_keeps_checked_boxes_across_polls(stack, api):
    sequence_id = await new_sequence(api)
    ids = [await enrolled(api, sequence_id, (await new_contact(api))[0]) for _ in range(3)]
    async with web_client(stack) as browser:
        # a poll while two are checked renders them checked again
        polled = (await browser.get(rows_url(sequence_id) + f"&enrollment_id={ids[0]}"
                                    f"&enrollment_id={ids[1]}", headers=HTMX)).text
        assert "checked" in row_of(polled, ids[0]) and "checked" in row_of(polled, ids[1])
        assert "checked" not in row_of(polled, ids[2])
        confirm = await browser.get(f"/sequences/{sequence_id}/stop",
                                    params={"enrollment_id": ids[:2], "status": "active"})
        assert "Stop 2 enrollees?" in confirm.text and "Stop 2 enrollees</button>" in confirm.text
        stopped = await browser.post(f"/sequences/{sequence_id}/stop", data={
            "csrf_token": browser.csrf, "enrollment_id": ids[:2], "status": "active"})
        assert stopped.status_code == 303 and "status=active" in stopped.headers["location"]
        assert [await status_of(api, i) for i in ids] == ["stopped", "stopped", "active"]
        nobody = await browser.get(f"/sequences/{sequence_id}/stop")
        assert "Nobody to stop" in nobody.text


async def test_filter_and_sort_the_enrollees(stack, api):
    sequence_id = await new_sequence(api)
    names = ["가나", "다라", "마바"]
    ids = [await enrolled(api, sequence_id, (await new_contact(api, name=name))[0])
           for name in names]
    await api.post(f"/v1/enrollments/{ids[1]}/stop", json={})
    async with web_client(stack) as browser:
        stopped = (await browser.get(rows_url(sequence_id, status="stopped"), headers=HTMX)).text
        assert f"/enrollments/{ids[1]}" in stopped
        assert f"/enrollments/{ids[0]}" not in stopped and f"/enrollments/{ids[2]}" not in stopped
        by_name = (await browser.get(rows_url(sequence_id, sort="contact_name", descending="1"),
                                     headers=HTMX)).text
        shown = re.findall(r'/enrollments/[^"]+" id="open-[^"]+">([^<]+)</a>', by_name)
        assert shown == list(reversed(names))
        page = main_of((await browser.get(f"/sequences/{sequence_id}", params={
            "tab": "enrollees", "status": "stopped", "sort": "contact_name",
            "descending": "1"})).text)
        assert '<option value="stopped" selected>' in page
        assert '<option value="contact_name" selected>' in page
        assert '<option value="1" selected>' in page
        # the poll keeps the filter
        assert (f'hx-get="/sequences/{sequence_id}/enrollees?status=stopped&amp;'
                'sort=contact_name&amp;descending=1"') in page
        nobody = main_of((await browser.get(f"/sequences/{await new_sequence(api)}",
                                            params={"tab": "enrollees"})).text)
        assert "Nobody enrolled yet" in nobody and "/enroll" in nobody


async def test_another_workspaces_sequence_is_not_found(stack, api, other):
    async with stack.api_client() as theirs_api:
        theirs_api.headers["Authorization"] = f"Bearer {other['api_key']}"
        theirs = await new_sequence(theirs_api)
    ours = await new_sequence(api)
    unknown = await browser_statuses(stack, [
        f"/sequences/{theirs}", f"/sequences/{theirs}?tab=enrollees",
        f"/sequences/{theirs}?tab=schedule", f"/sequences/{theirs}/enroll",
        f"/sequences/{theirs}/enroll?tab=segment&all=true&preview=1",
        f"/sequences/{theirs}/stop", rows_url(theirs), f"/sequences/{uuid.uuid4()}",
        "/sequences/not-an-id"])
    assert set(unknown) == {404}, unknown
    async with web_client(stack) as browser:
        not_found = await browser.get(f"/sequences/{theirs}")
        assert main_of(not_found.text) == main_of(
            (await browser.get(f"/sequences/{uuid.uuid4()}")).text)
        posted = await browser.post(f"/sequences/{theirs}/enroll/segment", data={
            "csrf_token": browser.csrf, "segment.all": "true"})
        assert posted.status_code == 404
        assert (await browser.get(f"/sequences/{ours}?tab=nonsense")).status_code == 422


async def browser_statuses(stack, urls: list[str]) -> list[int]:
    async with web_client(stack) as browser:
        return [(await browser.get(url)).status_code for url in urls]


async def test_names_are_escaped_everywhere(stack, api):
    sequence_id = await new_sequence(api, name=SCRIPT, purpose=SCRIPT)
    contact_id, _ = await new_contact(api, name=SCRIPT, company=SCRIPT)
    enrollment_id = await enrolled(api, sequence_id, contact_id)
    async with web_client(stack) as browser:
        for url in (f"/sequences/{sequence_id}", f"/sequences/{sequence_id}?tab=enrollees",
                    f"/sequences/{sequence_id}?tab=schedule",
                    f"/sequences/{sequence_id}?tab=settings",
                    f"/sequences/{sequence_id}/enroll?q=alert",
                    f"/sequences/{sequence_id}/stop?enrollment_id={enrollment_id}",
                    rows_url(sequence_id)):
            answer = await browser.get(url, headers=HTMX if "enrollees?" in url else {})
            assert answer.status_code == 200, url
            assert SCRIPT not in answer.text and ESCAPED in answer.text, url


async def test_posts_without_the_csrf_token_are_refused(stack, api):
    sequence_id = await new_sequence(api)
    contact_id, _ = await new_contact(api)
    enrollment_id = await enrolled(api, sequence_id, contact_id)
    async with web_client(stack) as browser:
        for url, data in (
                (f"/sequences/{sequence_id}/stop", {"enrollment_id": enrollment_id}),
                (f"/sequences/{sequence_id}/enroll/segment", {"segment.all": "true"}),
                (f"/sequences/{sequence_id}/enroll/contacts", {"contact_id": contact_id}),
                (f"/sequences/{sequence_id}/enrollees/{enrollment_id}/retry", {})):
            answer = await browser.post(url, data=data)
            assert answer.status_code == 403, url
            forged = await browser.post(url, data={**data, "csrf_token": "forged"})
            assert forged.status_code == 403, url
    assert await status_of(api, enrollment_id) == "active"
    assert (await api.get(f"/v1/sequences/{sequence_id}")).json()["enrolled"] == 1


async def test_preview_segment_counts_what_enroll_segment_then_does(stack, api):
    sequence_id = await new_sequence(api)
    listed = f"l{uuid.uuid4().hex[:8]}"
    for _ in range(3):
        await new_contact(api, lists=[listed])
    ended_id, _ = await new_contact(api, lists=[listed])
    ended = await enrolled(api, sequence_id, ended_id)
    await api.post(f"/v1/enrollments/{ended}/stop", json={})
    workspace = uuid.UUID(stack.workspace["workspace_id"])
    async with await connect(stack.env()["NATS_URL"], "tests") as nc:
        segment = c.Segment(list=listed)
        counts = [await bus.ask(nc, workspace, c.PreviewSegment, sequence_id=sequence_id,
                                segment=segment, reenroll=reenroll) for reenroll in (False, True)]
        assert counts[0] == {"enrolled": 3, "skipped_active": 0, "skipped_ended": 1,
                             "excluded_opted_out": 0, "refused_bounced": 0,
                             "excluded_suppressed": 0}
        assert counts[1]["enrolled"] == 4 and counts[1]["skipped_ended"] == 0
        done = await bus.ask(nc, workspace, c.EnrollSegment, sequence_id=sequence_id,
                             segment=segment, reenroll=True)
        assert done == counts[1]
        with pytest.raises(bus.ProblemError) as refused:
            await bus.ask(nc, uuid.uuid4(), c.PreviewSegment, sequence_id=sequence_id,
                          segment=segment)
        assert refused.value.problem.status == 404


async def test_a_held_enrollee_says_why_and_can_be_retried(stack, api):
    held_steps = [{"channel": "email", "subject": "{{직함}} 님께", "wait_days": 0,
                   "body": "안녕하세요"}]
    sequence_id = await new_sequence(api, steps=held_steps)
    contact_id, _ = await new_contact(api)  # no job title, and no fallback: the step is held
    enrollment_id = await enrolled(api, sequence_id, contact_id)

    async def held():
        return await status_of(api, enrollment_id) == "needs_attention"
    await eventually(held, timeout=30)
    async with web_client(stack) as browser:
        row = row_of((await browser.get(rows_url(sequence_id), headers=HTMX)).text,
                     enrollment_id)
        assert "Held:" in row and "badge-needs_attention" in row
        assert f'form="retry-{enrollment_id}"' in row
        page = (await browser.get(f"/sequences/{sequence_id}?tab=enrollees")).text
        assert f'id="retry-{enrollment_id}"' in page
        retried = await browser.post(
            f"/sequences/{sequence_id}/enrollees/{enrollment_id}/retry",
            data={"csrf_token": browser.csrf})
        assert retried.status_code == 303
        assert retried.headers["location"].startswith(f"/sequences/{sequence_id}?tab=enrollees")
        elsewhere = await browser.post(
            f"/sequences/{await new_sequence(api)}/enrollees/{enrollment_id}/retry",
            data={"csrf_token": browser.csrf})
        assert elsewhere.status_code == 404  # not that sequence's enrollee
    events = (await api.get(f"/v1/enrollments/{enrollment_id}/timeline")).json()["entries"]
    assert "EnrollmentRetried" in [e["type"] for e in events]

    # held again (the job title is still empty): why, in Korean on a Korean page; the API
    # keeps its English, with the text it is made of
    await eventually(held, timeout=30)
    async with web_client(stack, language="ko") as browser:
        row = row_of((await browser.get(rows_url(sequence_id), headers=HTMX)).text,
                     enrollment_id)
    assert "1단계 미발송: 이 고객의 {{직함}} 값이 없고 대체값도 없습니다" in html.unescape(row)
    view = (await api.get(f"/v1/enrollments/{enrollment_id}")).json()
    assert view["attention"] == ("step 1 not sent: {{직함}} has no value for this contact and"
                                 " no fallback")
    assert view["attention_text"]["message"] == "step %(step)s not sent: %(why)s"
    assert view["schedule_note"] == "retried"  # the plan made by the retry


async def test_stop_selected_is_offered_only_when_a_row_can_be_stopped(stack, api):
    sequence_id = await new_sequence(api)
    contact_id, _ = await new_contact(api)
    enrollment_id = await enrolled(api, sequence_id, contact_id)
    async with web_client(stack) as browser:
        page = (await browser.get(f"/sequences/{sequence_id}?tab=enrollees")).text
        assert "Stop selected" in page
        await api.post(f"/v1/enrollments/{enrollment_id}/stop", json={})

        async def stopped():
            return await status_of(api, enrollment_id) == "stopped"
        await eventually(stopped)
        page = (await browser.get(f"/sequences/{sequence_id}?tab=enrollees")).text
    assert f'/enrollments/{enrollment_id}"' in page and "Stop selected" not in page


async def test_every_read_model_is_rebuilt_the_same(stack, api):
    """step_completions, enrollments.last_step_id and the counts per status come back row for
    row from the log; so does `schedule_note` of the enrollment above, retried and held again
    (the plan made between the retry and the second hold is replayed after both)."""
    await settled(stack)
    live = await read_models(stack)
    assert live["enrollment.step_completions"], "the tests above sent steps"
    # the counts the projection keeps are the enrollees there are, per sequence and status
    kept = await sql(stack, "SELECT sequence_id, status, enrollees FROM"
                            " enrollment.enrollment_counts WHERE enrollees <> 0 ORDER BY 1, 2")
    counted = await sql(stack, "SELECT sequence_id, status, count(*) FROM"
                               " enrollment.enrollments GROUP BY 1, 2 ORDER BY 1, 2")
    assert kept and kept == counted
    await rebuild_projections(stack)
    rebuilt = await read_models(stack)
    assert projections.differences(live, rebuilt) == {}, "\n".join(rows_that_differ(live, rebuilt))


async def test_the_api_answers_the_step_counts(api):
    sequence_id = await new_sequence(api)
    stats = await api.get(f"/v1/sequences/{sequence_id}/steps/stats")
    assert stats.status_code == 200, stats.text
    assert [(s["step_index"], s["sent"]) for s in stats.json()["steps"]] == [(0, 0), (1, 0)]
    assert (await api.get(f"/v1/sequences/{uuid.uuid4()}/steps/stats")).status_code == 404


async def test_a_rep_chooses_an_ab_winner_on_the_stats_tab_after_a_confirmation(stack, api):
    from tests.e2e.test_tracking import ab_sequence

    sequence_id = (await api.post("/v1/sequences", json=ab_sequence())).json()["id"]
    stats = f"/sequences/{sequence_id}?tab=stats"
    async with web_client(stack) as browser:
        page = main_of((await browser.get(stats)).text)
        assert "No winner yet" in page
        assert f'href="/sequences/{sequence_id}/winner?letter=B"' in page
        asked = await browser.get(f"/sequences/{sequence_id}/winner?letter=B")
        assert asked.status_code == 200 and "Choose variant B as the winner?" in asked.text
        assert "Emails already sent stay as they were." in asked.text
        refused = await browser.post(f"/sequences/{sequence_id}/winner?letter=B")  # no token
        assert refused.status_code == 403
        chosen = await browser.post(f"/sequences/{sequence_id}/winner?letter=B",
                                    data={"csrf_token": browser.csrf})
        assert chosen.status_code == 303 and chosen.headers["location"].endswith(
            "?tab=stats&winner=B")
        page = main_of((await browser.get(chosen.headers["location"])).text)
        assert "Variant B is the winner now" in page
        assert f"Variant B, chosen by {stack.workspace['user_email']}" in page
        assert f"/winner?letter=B" not in page and f"/winner?letter=A" in page
        no_such = await browser.post(f"/sequences/{sequence_id}/winner?letter=C",
                                     data={"csrf_token": browser.csrf})
        assert no_such.status_code == 422 and "no step of this sequence has a variant C" \
            in no_such.text
    async with web_client(stack, language="ko") as korean:
        await korean.post("/preferences", data={"csrf_token": korean.csrf, "language": "ko",
                                                "back": stats})
        assert "버전 B, " in main_of((await korean.get(stats)).text)
    analytics = (await api.get(f"/v1/sequences/{sequence_id}/analytics")).json()
    assert analytics["winner"]["letter"] == "B" and analytics["winner"]["by"] == "hand"
    await korean_back_to_english(stack)


async def korean_back_to_english(stack) -> None:
    """The user's language is a setting of the shared workspace's user: put it back."""
    async with web_client(stack) as browser:
        await browser.post("/preferences", data={"csrf_token": browser.csrf, "language": "en",
                                                 "back": "/campaigns"})
