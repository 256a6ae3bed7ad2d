"""The workspace's mailboxes end to end: connected through the API (bad input refused, secrets
never shown), "test connection" with the exact failure, a sequence rotating over three capped
mailboxes (60 a day of caps 10, 20 and 30, the rest the next day), each enrollment keeping its
mailbox for its thread, and a login the server refuses holding the sends of that mailbox."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from email.utils import parseaddr

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from sequences.devstack.capture import read_captured
from sequences.devstack.dovecot import Dovecot, dovecot_binary
from sequences.devstack.ports import free_port
from sequences.devstack.stack import Stack
from tests.e2e.test_mailer import advance
from tests.e2e.test_metrics import scrape, total
from tests.e2e.test_web_app import main_of
from tests.e2e.test_web_settings import field_error
from tests.support import eventually, stack_config, web_client

PASSWORD = "s3cret pass/word"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    env = {"thread-watcher": {"WATCH_REFRESH_SECONDS": "1"}}
    with Stack(stack_config(tmp_path_factory, service_env=env)) as running:
        yield running


class _Accept:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"


def _check_login(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.password.decode() == PASSWORD
    return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def auth_smtp():
    """An SMTP server that wants AUTH (without TLS: loopback); a wrong password gets aiosmtpd's
    own "535 5.7.8 Authentication credentials invalid"."""
    controller = Controller(_Accept(), hostname="127.0.0.1", port=free_port(),
                            authenticator=_check_login, auth_required=True,
                            auth_require_tls=False)
    controller.start()
    yield controller
    controller.stop()


def mailbox(address: str, port: int, **overrides) -> dict:
    body = {"address": address, "display_name": "영업팀 " + address.split("@")[0],
            "smtp": {"host": "127.0.0.1", "port": port, "security": "none"}}
    return {**body, **overrides}


async def connect(api, body: dict) -> str:
    response = await api.post("/v1/mailboxes", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def sent_from(stack, subject_part: str) -> Counter:
    return Counter(parseaddr(m["From"])[1] for m in read_captured(stack.mail_dir)
                   if subject_part in str(m["Subject"]))


def max_of(samples, name: str, **labels) -> float | None:
    """The largest of the matching samples (each mailer replica reports every mailbox)."""
    values = [value for found, value in samples.get(name, [])
              if all(found.get(k) == v for k, v in labels.items())]
    return max(values, default=None)


async def test_bad_mailboxes_are_refused_naming_the_field(stack, api):
    cases = [
        (mailbox("a@sales.example", 0), "smtp.port"),
        (mailbox("not an address", 25), "address"),
        ({**mailbox("a@sales.example", 25), "smtp": {"host": "bad host!", "port": 25}},
         "smtp.host"),
        (mailbox("a@sales.example", 25, auth="oauth2", oauth_provider="google",
                 smtp={"host": "smtp.gmail.com", "password": "x"}), "smtp"),
        (mailbox("a@sales.example", 25, auth="oauth2"), "oauth_provider"),
        (mailbox("a@sales.example", 25, limits={"daily_cap": 0}), "limits.daily_cap"),
        (mailbox("a@sales.example", 25, limits={"daily_cap": 5, "warmup_start": 9}), "limits"),
        (mailbox("a@sales.example", 25, imap={"host": "127.0.0.1", "folders": []}),
         "imap.folders"),
    ]
    for body, field in cases:
        response = await api.post("/v1/mailboxes", json=body)
        assert response.status_code == 422, (body, response.text)
        assert any(e["field"] == field for e in response.json()["errors"]), response.json()
    assert (await api.get("/v1/mailboxes")).json() == []


async def test_secrets_are_never_shown_and_test_connection_says_what_failed(stack, api,
                                                                           auth_smtp):
    good = await connect(api, mailbox("rep@sales.example", auth_smtp.port,
                                      smtp={"host": "127.0.0.1", "port": auth_smtp.port,
                                            "security": "none", "password": PASSWORD}))
    again = await api.post("/v1/mailboxes", json=mailbox("REP@sales.example", 25))
    assert again.status_code == 409 and again.json()["errors"][0]["field"] == "address"
    shown = await api.get(f"/v1/mailboxes/{good}")
    assert shown.json()["smtp"]["has_password"] is True
    assert PASSWORD not in shown.text and PASSWORD not in (await api.get("/v1/mailboxes")).text
    tested = (await api.post(f"/v1/mailboxes/{good}/test")).json()
    assert tested["smtp"]["ok"] is True, tested
    assert tested["imap"] is None

    wrong = await connect(api, mailbox("wrong@sales.example", auth_smtp.port,
                                       smtp={"host": "127.0.0.1", "port": auth_smtp.port,
                                             "security": "none", "password": "nope nope"}))
    refused = (await api.post(f"/v1/mailboxes/{wrong}/test")).json()["smtp"]
    assert not refused["ok"] and refused["error"].startswith("535"), refused
    assert "nope nope" not in refused["error"]
    health = (await api.get(f"/v1/mailboxes/{wrong}")).json()
    assert health["healthy"] is False and "535" in health["problem"]

    closed = await connect(api, mailbox("closed@sales.example", free_port()))
    nobody = (await api.post(f"/v1/mailboxes/{closed}/test")).json()["smtp"]
    assert not nobody["ok"] and "refused" in nobody["error"].lower(), nobody

    no_auth = await connect(api, mailbox("noauth@sales.example", stack.smtp_port,
                                         smtp={"host": "127.0.0.1", "port": stack.smtp_port,
                                               "security": "none", "password": "pw pw"}))
    unoffered = (await api.post(f"/v1/mailboxes/{no_auth}/test")).json()["smtp"]
    assert not unoffered["ok"] and "AUTH" in unoffered["error"], unoffered

    # a password changed with PUT: the login works and the mailbox is healthy again
    fixed = await api.put(f"/v1/mailboxes/{wrong}", json=mailbox(
        "wrong@sales.example", auth_smtp.port, smtp={
            "host": "127.0.0.1", "port": auth_smtp.port, "security": "none",
            "password": PASSWORD}))
    assert fixed.status_code == 200, fixed.text
    assert (await api.post(f"/v1/mailboxes/{wrong}/test")).json()["smtp"]["ok"]
    for mailbox_id in (closed, no_auth):
        assert (await api.delete(f"/v1/mailboxes/{mailbox_id}")).status_code == 204
    assert (await api.get(f"/v1/mailboxes/{closed}")).status_code == 404


async def _enroll_tagged(api, tag: str, count: int, sequence: dict) -> str:
    sequence_id = (await api.post("/v1/sequences", json=sequence)).json()["id"]
    await asyncio.gather(*(api.post("/v1/contacts", json={
        "name": f"고객{i}", "company": "한빛상사", "email": f"{tag}.{i}@customer.example",
        "tags": [tag]}) for i in range(count)))
    enrolled = await api.post(f"/v1/sequences/{sequence_id}/enrollments/bulk",
                              json={"segment": {"tag": tag}})
    assert enrolled.status_code == 200, enrolled.text
    assert enrolled.json()["enrolled"] == count, enrolled.text
    return sequence_id


def _state_of(enrollee: dict) -> dict:
    return {k: enrollee.get(k) for k in ("contact_email", "status", "sends", "next_due_at",
                                         "schedule_note", "attention")}


def _sequence(pool: list[str], subject: str, follow_up: bool = False) -> dict:
    steps = [{"channel": "email", "wait_days": 0, "subject": subject + " {{고객명}}",
              "body": "안녕하세요 {{고객명}}님"}]
    if follow_up:
        steps.append({"channel": "email", "wait_days": 1, "body": "다시 연락드립니다"})
    return {"name": subject, "sender_name": "이영희", "sender_email": "younghee@sales.example",
            "timezone": "UTC", "send_policy": {"mode": "as_soon_as_due"}, "steps": steps,
            "mailbox_pool": pool}


async def test_a_pool_of_three_capped_mailboxes_sends_60_a_day_and_the_rest_the_next(stack,
                                                                                  api):
    caps = {"ten@pool.example": 10, "twenty@pool.example": 20, "thirty@pool.example": 30}
    for address, cap in caps.items():
        await connect(api, mailbox(address, stack.smtp_port, limits={"daily_cap": cap}))
    sequence_id = await _enroll_tagged(api, "capped", 66, _sequence(list(caps), "풀 발송"))
    shown = (await api.get(f"/v1/sequences/{sequence_id}")).json()
    assert shown["mailbox_pool"] == list(caps)

    async def day_one():
        sent = sent_from(stack, "풀 발송")
        waiting = (await api.get(f"/v1/sequences/{sequence_id}/enrollments",
                                 params={"limit": 500})).json()["items"]
        deferred = [e for e in waiting if e["sends"] == 0 and e.get("schedule_note")]
        return sent if sum(sent.values()) == 60 and len(deferred) == 6 else None

    sent = await eventually(day_one, timeout=60)
    assert sent == Counter(caps), sent
    today = {m["address"]: m["today"] for m in (await api.get("/v1/mailboxes")).json()}
    assert all(today[a]["sent_today"] == cap and today[a]["cap_today"] == cap
               for a, cap in caps.items()), today

    async def gauges_show_sends_against_caps():  # the Mailboxes dashboard's figures
        found = await scrape(stack)
        return all(max_of(found, name, mailbox=a, window="day") == cap
                   for a, cap in caps.items()
                   for name in ("sequences_mailbox_sent", "sequences_mailbox_limit"))
    await eventually(gauges_show_sends_against_caps, timeout=30, interval=0.5)

    await advance(stack, timedelta(days=1))

    async def day_two():
        sent = sent_from(stack, "풀 발송")
        return sent if sum(sent.values()) == 66 else None

    sent = await eventually(day_two, timeout=60)
    assert all(sent[a] <= 2 * cap for a, cap in caps.items()), sent


async def test_each_enrollment_keeps_its_mailbox_for_its_whole_thread(stack, api):
    pool = ["left@keep.example", "right@keep.example"]
    for address in pool:
        await connect(api, mailbox(address, stack.smtp_port))
    await _enroll_tagged(api, "keep", 6, _sequence(pool, "스레드 유지", follow_up=True))

    def threads():
        by_recipient = {}
        for m in read_captured(stack.mail_dir):
            if "스레드 유지" in str(m["Subject"]):
                by_recipient.setdefault(m["To"], []).append(m)
        return by_recipient

    async def first_steps():
        return len(threads()) == 6
    await eventually(first_steps, timeout=30)
    assert set(Counter(parseaddr(ms[0]["From"])[1] for ms in threads().values())) == set(pool)
    await advance(stack, timedelta(days=1))

    async def second_steps():
        return all(len(ms) == 2 for ms in threads().values()) and threads()
    for messages in (await eventually(second_steps, timeout=30)).values():
        first, second = messages
        assert parseaddr(first["From"])[1] == parseaddr(second["From"])[1]
        assert second["In-Reply-To"] == first["Message-ID"]


async def test_a_login_the_server_refuses_holds_that_mailboxs_sends(stack, api, auth_smtp):
    held = await connect(api, mailbox("held@sales.example", auth_smtp.port, smtp={
        "host": "127.0.0.1", "port": auth_smtp.port, "security": "none",
        "password": "revoked"}))
    await connect(api, mailbox("other@sales.example", stack.smtp_port))
    sequence_id = await _enroll_tagged(api, "held", 2, _sequence(["held@sales.example"],
                                                                 "보류 확인"))
    await _all_deferred(api, sequence_id)
    view = (await api.get(f"/v1/mailboxes/{held}")).json()
    assert view["healthy"] is False and view["problem"].startswith("SMTP: 535"), view
    # an enrollment whose first step comes after the mailbox was found unable to send (on a
    # busy machine, the second one above may): deferred too, not held for want of a mailbox
    later = await _enroll_tagged(api, "held-later", 1, _sequence(["held@sales.example"],
                                                                 "보류 확인 나중"))
    await _all_deferred(api, later)
    assert sent_from(stack, "보류 확인") == Counter()  # nothing went from another mailbox


async def _all_deferred(api, sequence_id: str) -> None:
    """Every enrollee waits, saying why, with nothing sent; else what each one came to."""
    last: list[dict] = []

    async def deferred():
        last[:] = (await api.get(f"/v1/sequences/{sequence_id}/enrollments")).json()["items"]
        return all(e["sends"] == 0 and e.get("schedule_note") for e in last) and last
    try:
        await eventually(deferred, timeout=30)
    except AssertionError as failed:
        raise AssertionError(f"{failed}; enrollees: {[_state_of(e) for e in last]}") from None


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory):
    if dovecot_binary() is None:
        pytest.skip("Dovecot is not installed (apt-get install dovecot-imapd; .ci/run does)")
    with Dovecot(tmp_path_factory.mktemp("dovecot"), user="reader", password=PASSWORD) as server:
        yield server


async def test_a_connected_mailbox_is_read_by_the_watcher_and_its_imap_login_tested(stack, api,
                                                                                  dovecot):
    imap = {"host": "127.0.0.1", "port": dovecot.port, "security": "none",
            "username": "reader", "password": PASSWORD, "folders": ["INBOX"]}
    read = await connect(api, mailbox("reader@read.example", stack.smtp_port, imap=imap))
    await api.post("/v1/sequences", json=_sequence(["reader@read.example"], "읽기"))
    tested = (await api.post(f"/v1/mailboxes/{read}/test")).json()
    assert tested["smtp"]["ok"] and tested["imap"]["ok"], tested

    async def watched():
        health = (await api.get("/v1/mailboxes/health")).json()
        return next((h for h in health if h["mailbox"].startswith("imap://reader@")
                     and h["state"] == "watching"), None)
    found = await eventually(watched, timeout=30)  # without a restart of the watcher
    assert found["healthy"] and found["idle"], found

    wrong = await connect(api, mailbox("wrongread@read.example", stack.smtp_port,
                                       imap={**imap, "password": "not it at all"}))
    refused = (await api.post(f"/v1/mailboxes/{wrong}/test")).json()["imap"]
    assert not refused["ok"] and "login rejected" in refused["error"], refused
    assert "not it at all" not in refused["error"]

    async def imap_operations_timed():  # the watcher's and the tests' logins, the refused one
        found = await scrape(stack)     # as an error; the watcher's folder selected

        def count(**labels) -> float:
            return total(found, "sequences_imap_operation_duration_seconds_count", **labels)
        return (count(imap_operation="login", error_type="MailboxError") >= 1
                and count(imap_operation="login") >= 3 and count(imap_operation="select") >= 1)
    await eventually(imap_operations_timed, timeout=30, interval=0.5)


async def test_the_settings_screen_connects_tests_and_disconnects_a_mailbox(stack, api,
                                                                         auth_smtp):
    form = {"address": "web@screen.example", "display_name": "웹 화면",
            "smtp.host": "127.0.0.1", "smtp.port": "0", "smtp.security": "none",
            "smtp.password": PASSWORD, "imap.host": "", "limits.daily_cap": "50"}
    async with web_client(stack) as browser:
        bad = await browser.post("/settings/mailboxes", data={"csrf_token": browser.csrf,
                                                              **form})
        assert bad.status_code == 422 and field_error(bad.text, "smtp-port")
        assert PASSWORD not in bad.text and 'value="웹 화면"' in bad.text
        good = await browser.post("/settings/mailboxes", data={
            "csrf_token": browser.csrf, **form, "smtp.port": str(auth_smtp.port)})
        assert good.status_code == 303, good.text
        [made] = [m for m in (await api.get("/v1/mailboxes")).json()
                  if m["address"] == "web@screen.example"]
        assert made["limits"]["daily_cap"] == 50 and made["imap"] is None
        page = await browser.post(f"/settings/mailboxes/{made['mailbox_id']}/test",
                                  data={"csrf_token": browser.csrf})
        assert page.status_code == 200 and "works" in main_of(page.text)
        assert PASSWORD not in page.text
        ko = await browser.get("/settings/mailboxes", headers={"Accept-Language": "ko"})
        assert "연결된 메일함" in ko.text or "Connected mailboxes" in ko.text
        asked = await browser.get(f"/settings/mailboxes/{made['mailbox_id']}/delete")
        assert "web@screen.example" in main_of(asked.text)
        gone = await browser.post(f"/settings/mailboxes/{made['mailbox_id']}/delete",
                                  data={"csrf_token": browser.csrf})
        assert gone.status_code == 303
    assert (await api.get(f"/v1/mailboxes/{made['mailbox_id']}")).status_code == 404
