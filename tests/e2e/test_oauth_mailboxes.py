"""OAuth2 mailboxes end to end, against real local servers (tests/oauth_servers.py): the
workspace's OAuth client, the consent flow through the gateway (PKCE), sends over STARTTLS with
AUTH XOAUTH2, a token refreshed when the server answers 535 and the send tried again, a revoked
refresh token making the mailbox unhealthy and holding its sends (nothing sent from another
mailbox), a rotated encryption key keeping every mailbox working, and bad servers: each one
clear error in "test connection", nothing sent."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections import Counter
from email import message_from_bytes
from email.header import decode_header, make_header
from email.utils import parseaddr

import httpx
import pytest

from sequences.devstack.dovecot import Dovecot, dovecot_binary
from sequences.devstack.ports import free_port
from sequences.encryption import SecretBox
from sequences.devstack.stack import Stack
from tests.e2e.test_mailboxes import _enroll_tagged, _sequence, connect
from tests.oauth_servers import OAuthServer, OAuthSmtpHandler, certificate, start_smtp
from tests.e2e.test_web_app import main_of
from tests.e2e.test_web_settings import field_error
from tests.support import eventually, stack_config, web_client

PASSWORD = "plain pass over tls"


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A certificate for 127.0.0.1, one for another host, and a CA file trusting both (so
    only the host name is wrong with the second)."""
    directory = tmp_path_factory.mktemp("tls")
    good, wrong = certificate(directory, "good", "127.0.0.1"), certificate(directory, "wrong",
                                                                            "other.example")
    ca = directory / "ca.pem"
    ca.write_text(open(good[0]).read() + open(wrong[0]).read())
    return good, wrong, str(ca)


@pytest.fixture(scope="module")
def oauth():
    server = OAuthServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tls):
    env = {"mailer": {"MAIL_CA_FILE": tls[2]},
           "thread-watcher": {"MAIL_CA_FILE": tls[2], "WATCH_REFRESH_SECONDS": "1"}}
    with Stack(stack_config(tmp_path_factory, service_env=env)) as running:
        yield running


def _server_context(cert_and_key) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert_and_key)
    return context


@pytest.fixture(scope="module")
def smtp(oauth, tls):
    handler = OAuthSmtpHandler(oauth, PASSWORD)
    controller = start_smtp(handler, free_port(), _server_context(tls[0]))
    yield handler, controller.port
    controller.stop()


def oauth_mailbox(address: str, port: int) -> dict:
    return {"address": address, "display_name": "OAuth " + address.split("@")[0],
            "auth": "oauth2", "oauth_provider": "google",
            "smtp": {"host": "127.0.0.1", "port": port, "security": "starttls"}}


async def consent(api, mailbox_id: str) -> httpx.Response:
    """The owner's browser: the gateway's authorize URL, the provider's redirect back, the
    gateway's callback."""
    started = await api.post(f"/v1/mailboxes/{mailbox_id}/oauth/start")
    assert started.status_code == 200, started.text
    async with httpx.AsyncClient() as browser:
        at_provider = await browser.get(started.json()["authorize_url"])
        assert at_provider.status_code == 302, at_provider.text
        callback = at_provider.headers["location"]
        return await browser.get(callback, headers={"Accept": "application/json"})


async def connect_oauth(api, oauth, address: str, port: int) -> str:
    client = await api.put("/v1/mailboxes/oauth-clients/google", json=oauth.client_settings())
    assert client.status_code == 200, client.text
    mailbox_id = await connect(api, oauth_mailbox(address, port))
    answered = await consent(api, mailbox_id)
    assert answered.status_code == 303, answered.text
    assert answered.headers["location"].endswith(f"connected={mailbox_id}")
    return mailbox_id


def sent_by(handler: OAuthSmtpHandler, subject_part: str) -> Counter:
    messages = [message_from_bytes(e.original_content) for e in handler.received]
    return Counter(parseaddr(m["From"])[1] for m in messages
                   if subject_part in str(make_header(decode_header(m["Subject"] or ""))))


async def sent_count(handler: OAuthSmtpHandler, subject_part: str) -> int:
    return sum(sent_by(handler, subject_part).values())


async def test_oauth_clients_are_kept_without_showing_their_secret(stack, api, oauth):
    refused = await api.put("/v1/mailboxes/oauth-clients/google", json={
        **oauth.client_settings(), "token_url": "http://tokens.example/token"})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "token_url"
    unknown = await api.put("/v1/mailboxes/oauth-clients/yahoo", json=oauth.client_settings())
    assert unknown.status_code == 422
    stored = await api.put("/v1/mailboxes/oauth-clients/google", json=oauth.client_settings())
    assert stored.status_code == 200, stored.text
    listed = await api.get("/v1/mailboxes/oauth-clients")
    assert listed.status_code == 200, listed.text
    assert listed.json()[0]["has_secret"] is True and oauth.client_settings()["client_secret"] \
        not in listed.text
    forged = await httpx.AsyncClient().get(f"{stack.gateway_url}/oauth/callback",
                                           params={"state": "forged.state", "code": "x"})
    assert forged.status_code == 400 and forged.json()["errors"][0]["field"] == "state"


async def test_consent_then_sends_with_xoauth2_and_a_refused_token_is_refreshed(stack, api,
                                                                                oauth, smtp):
    handler, port = smtp
    mailbox_id = await connect_oauth(api, oauth, "rep@oauth.example", port)
    shown = (await api.get(f"/v1/mailboxes/{mailbox_id}")).json()
    assert shown["oauth_connected"] is True and shown["healthy"] is True, shown
    tested = (await api.post(f"/v1/mailboxes/{mailbox_id}/test")).json()["smtp"]
    assert tested["ok"] and "XOAUTH2" in tested["detail"], tested

    await _enroll_tagged(api, "oauthsend", 1, _sequence(["rep@oauth.example"], "토큰 발송"))
    await eventually(lambda: sent_count(handler, "토큰 발송"), timeout=60)
    assert "XOAUTH2" in handler.logins

    oauth.expire_access_tokens()  # the server now answers 535 for the token the mailer holds
    refreshes = oauth.token_requests.count("refresh_token")
    await _enroll_tagged(api, "oauthsend2", 1, _sequence(["rep@oauth.example"], "갱신 발송"))
    await eventually(lambda: sent_count(handler, "갱신 발송"), timeout=60)
    assert oauth.token_requests.count("refresh_token") > refreshes
    assert (await api.get(f"/v1/mailboxes/{mailbox_id}")).json()["healthy"] is True


async def test_a_revoked_refresh_token_makes_the_mailbox_unhealthy_and_holds_its_sends(
        stack, api, oauth, smtp):
    handler, port = smtp
    mailbox_id = await connect_oauth(api, oauth, "revoked@oauth.example", port)
    await connect(api, {"address": "spare@oauth.example", "smtp": {
        "host": "127.0.0.1", "port": port, "security": "starttls", "password": PASSWORD}})
    oauth.revoke()
    sequence_id = await _enroll_tagged(api, "revoked", 2, _sequence(
        ["revoked@oauth.example"], "철회 확인"))

    async def held():
        items = (await api.get(f"/v1/sequences/{sequence_id}/enrollments")).json()["items"]
        return all(e["sends"] == 0 and e.get("schedule_note") for e in items) and items
    items = await eventually(held, timeout=60)
    assert all(e["status"] == "active" for e in items)  # waiting, not lost
    assert any("invalid_grant" in e["schedule_note"] for e in items), items
    view = (await api.get(f"/v1/mailboxes/{mailbox_id}")).json()
    assert view["healthy"] is False and "invalid_grant" in view["problem"], view
    assert sent_by(handler, "철회 확인") == Counter()  # nothing from the spare mailbox either

    again = await consent(api, mailbox_id)  # the owner connects it again
    assert again.status_code == 303
    assert (await api.get(f"/v1/mailboxes/{mailbox_id}")).json()["healthy"] is True


async def test_a_rotated_encryption_key_keeps_every_mailbox_working(stack, api, oauth, smtp):
    handler, port = smtp
    oauth_id = await connect_oauth(api, oauth, "rotate@oauth.example", port)
    password_id = await connect(api, {"address": "plain@oauth.example", "smtp": {
        "host": "127.0.0.1", "port": port, "security": "starttls", "password": PASSWORD}})
    keys = stack.config.data_dir / "encryption-keys"
    old = keys.read_text().strip()
    keys.write_text(f"{SecretBox.new_key()},{old}")
    rotated = subprocess.run([sys.executable, "-m", "sequences.cli", "admin", "rotate-secrets"],
                             env={**os.environ, **stack.env()}, capture_output=True, text=True)
    assert rotated.returncode == 0, rotated.stderr
    keys.write_text(keys.read_text().split(",")[0])  # the old key dropped
    for service in ("mailer", "thread-watcher"):
        stack.restart_service(service)
    stack.wait_until_ready()
    for mailbox_id in (oauth_id, password_id):
        async def answered(mailbox_id=mailbox_id):  # the restarted services may take a moment
            response = await api.post(f"/v1/mailboxes/{mailbox_id}/test")
            return response.status_code != 503 and response.json()
        tested = await eventually(answered, timeout=60)
        assert tested["smtp"]["ok"], tested
    oauth.expire_access_tokens()  # a refresh: the refresh token and client secret still open
    await _enroll_tagged(api, "rotated", 1, _sequence(["rotate@oauth.example"], "회전 후 발송"))
    await eventually(lambda: sent_count(handler, "회전 후 발송"), timeout=60)


async def test_bad_servers_give_one_clear_error_and_nothing_is_sent(stack, api, oauth, smtp,
                                                                    tls):
    handler, port = smtp
    wrong_cert = start_smtp(OAuthSmtpHandler(oauth, PASSWORD), free_port(),
                            _server_context(tls[1]))
    no_xoauth2 = start_smtp(OAuthSmtpHandler(oauth, PASSWORD), free_port(),
                            _server_context(tls[0]), mechanisms_excluded=["XOAUTH2"])
    try:
        cases = {
            "unknown host": ({"host": "no-such-host.invalid", "port": port}, "unknown host"),
            "wrong port": ({"host": "127.0.0.1", "port": free_port()}, "refused"),
            "wrong certificate": ({"host": "127.0.0.1", "port": wrong_cert.port}, "TLS"),
            "no XOAUTH2": ({"host": "127.0.0.1", "port": no_xoauth2.port}, "XOAUTH2"),
        }
        before = len(handler.received)
        for number, (name, (server, words)) in enumerate(cases.items()):
            mailbox_id = await connect_oauth(api, oauth, f"bad{number}@oauth.example",
                                             server["port"])
            await api.put(f"/v1/mailboxes/{mailbox_id}", json={
                **oauth_mailbox(f"bad{number}@oauth.example", 0),
                "smtp": {**server, "security": "starttls"}})
            tested = (await api.post(f"/v1/mailboxes/{mailbox_id}/test")).json()["smtp"]
            assert not tested["ok"] and words in tested["error"], (name, tested)
            view = (await api.get(f"/v1/mailboxes/{mailbox_id}")).json()
            assert view["healthy"] is False and words in view["problem"], (name, view)

        garbled = await connect_oauth(api, oauth, "garbage@oauth.example", port)
        oauth.garbage = True
        oauth.expire_access_tokens()
        try:
            # the stored token is still young: the server's refusal makes the mailer refresh
            await _enroll_tagged(api, "garbage", 1, _sequence(["garbage@oauth.example"],
                                                              "엉터리 토큰"))

            async def unhealthy():
                view = (await api.get(f"/v1/mailboxes/{garbled}")).json()
                return not view["healthy"] and view
            view = await eventually(unhealthy, timeout=60)
            assert "not JSON" in view["problem"], view
        finally:
            oauth.garbage = False
        assert len(handler.received) == before  # nothing was sent by any of them
    finally:
        wrong_cert.stop()
        no_xoauth2.stop()


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory, tls, oauth):
    """Dovecot offering STARTTLS, PLAIN, and XOAUTH2 and OAUTHBEARER checked at the local
    OAuth server's introspection endpoint."""
    if dovecot_binary() is None:
        pytest.skip("Dovecot is not installed (apt-get install dovecot-imapd; .ci/run does)")
    with Dovecot(tmp_path_factory.mktemp("dovecot"), user="reader", password=PASSWORD,
                 tls=tls[0], oauth2_introspection_url=f"{oauth.base_url}/introspect") as server:
        yield server


@pytest.fixture(scope="module")
def dovecot_bearer(tmp_path_factory, tls, oauth):
    """Dovecot offering OAUTHBEARER and not XOAUTH2 (the watcher prefers XOAUTH2 when both are
    offered, so only such a server makes it speak RFC 7628)."""
    if dovecot_binary() is None:
        pytest.skip("Dovecot is not installed (apt-get install dovecot-imapd; .ci/run does)")
    with Dovecot(tmp_path_factory.mktemp("dovecot-bearer"), user="reader", password=PASSWORD,
                 tls=tls[0], oauth2_introspection_url=f"{oauth.base_url}/introspect",
                 oauth2_mechanisms=("oauthbearer",)) as server:
        yield server


async def test_imap_oauth_logs_in_with_either_mechanism_refreshes_a_refused_token_and_names_a_refusal(
        stack, api, oauth, smtp, dovecot, dovecot_bearer):
    """XOAUTH2 (over STARTTLS) and OAUTHBEARER (over implicit TLS) each: "test connection"
    logs in with it, the watcher then reads the mailbox; an access token the
    server refuses is refreshed and the login tried again; a token refused even fresh is one
    clear "login rejected" error, answered at once (the refusal's challenge is replied to, not
    left to time out)."""
    handler, port = smtp
    failed_logins = await _failed_imap_logins(stack)
    for server, mechanism, security in ((dovecot, "XOAUTH2", "starttls"),
                                        (dovecot_bearer, "OAUTHBEARER", "tls")):
        address = f"{mechanism.lower()}@oauth.example"
        mailbox_id = await connect_oauth(api, oauth, address, port)
        changed = await api.put(f"/v1/mailboxes/{mailbox_id}", json={
            **oauth_mailbox(address, port),
            "imap": {"host": "127.0.0.1", "security": security, "username": oauth.user,
                     "port": server.port if security == "starttls" else server.imaps_port,
                     "folders": ["INBOX"]}})
        assert changed.status_code == 200, changed.text
        tested = (await api.post(f"/v1/mailboxes/{mailbox_id}/test")).json()
        assert tested["imap"]["ok"], tested
        assert tested["imap"]["detail"].startswith(f"logged in with {mechanism};"), tested

        oauth.expire_access_tokens()
        refreshes = oauth.token_requests.count("refresh_token")
        tested = (await api.post(f"/v1/mailboxes/{mailbox_id}/test")).json()
        assert tested["imap"]["ok"] and tested["smtp"]["ok"], tested
        assert oauth.token_requests.count("refresh_token") > refreshes

        oauth.refuse_access = True
        try:
            tested = (await api.post(f"/v1/mailboxes/{mailbox_id}/test")).json()
        finally:
            oauth.refuse_access = False
        imap = tested["imap"]
        assert not imap["ok"] and imap["error"].startswith("login rejected"), tested
        assert "timeout" not in imap["error"].lower() and oauth.user not in imap["error"]

    # each refusal is timed as a failed login, error.type TokenRefused (two mechanisms: a
    # refusal of an expired token, then two of a token refused even fresh)
    assert await _failed_imap_logins(stack) >= failed_logins + 6

    # (the watcher reads the mailboxes sequences send from)
    await api.post("/v1/sequences", json=_sequence(["oauthbearer@oauth.example"], "읽기 BEARER"))

    async def watched():
        health = (await api.get("/v1/mailboxes/health")).json()
        return next((h for h in health if f":{dovecot_bearer.imaps_port}" in h["mailbox"]
                     and h["state"] == "watching"), None)
    found = await eventually(watched, timeout=60)
    assert found["healthy"], found


async def test_the_watcher_reads_an_oauth_mailbox_with_xoauth2_over_starttls(stack, api, oauth,
                                                                             smtp, dovecot):
    handler, port = smtp
    mailbox_id = await connect_oauth(api, oauth, "imap@oauth.example", port)
    imap = {"host": "127.0.0.1", "port": dovecot.port, "security": "starttls",
            "username": oauth.user, "folders": ["INBOX"]}
    changed = await api.put(f"/v1/mailboxes/{mailbox_id}", json={
        **oauth_mailbox("imap@oauth.example", port), "imap": imap})
    assert changed.status_code == 200, changed.text
    tested = (await api.post(f"/v1/mailboxes/{mailbox_id}/test")).json()
    assert tested["smtp"]["ok"] and tested["imap"]["ok"], tested
    await api.post("/v1/sequences", json=_sequence(["imap@oauth.example"], "읽기 OAuth"))

    async def watched():
        health = (await api.get("/v1/mailboxes/health")).json()
        return next((h for h in health if h["mailbox"].startswith(f"imap://{oauth.user}@")
                     and h["state"] == "watching"), None)
    found = await eventually(watched, timeout=60)
    assert found["healthy"], found

    password_read = await connect(api, {
        "address": "pwread@oauth.example",
        "smtp": {"host": "127.0.0.1", "port": port, "security": "starttls",
                 "password": PASSWORD},
        "imap": {"host": "127.0.0.1", "port": dovecot.port, "security": "starttls",
                 "username": "reader", "password": PASSWORD}})
    tested = (await api.post(f"/v1/mailboxes/{password_read}/test")).json()
    assert tested["imap"]["ok"], tested


async def test_the_settings_screen_sets_up_the_client_and_connects_with_google(stack, api,
                                                                             oauth, smtp):
    handler, port = smtp
    settings = oauth.client_settings()
    client_form = {f"google.{k}": v for k, v in settings.items() if k != "scopes"}
    async with web_client(stack) as browser:
        bad = await browser.post("/settings/mailboxes/oauth-clients/google", data={
            "csrf_token": browser.csrf, **client_form,
            "google.token_url": "ftp://tokens.example/token"})
        assert bad.status_code == 422 and field_error(bad.text, "google-token_url")
        assert settings["client_secret"] not in bad.text
        saved = await browser.post("/settings/mailboxes/oauth-clients/google", data={
            "csrf_token": browser.csrf, **client_form})
        assert saved.status_code == 303, saved.text
        made = await browser.post("/settings/mailboxes", data={
            "csrf_token": browser.csrf, "address": "webauth@oauth.example", "sign_in": "google",
            "smtp.host": "127.0.0.1", "smtp.port": str(port), "smtp.security": "starttls"})
        assert made.status_code == 303, made.text
        mailbox_id = made.headers["location"].rpartition("=")[2]
        page = await browser.get("/settings/mailboxes")
        assert "consent needed" in main_of(page.text) and "Connect Google" in page.text
        to_provider = await browser.post(f"/settings/mailboxes/{mailbox_id}/oauth",
                                         data={"csrf_token": browser.csrf})
        assert to_provider.status_code == 303
        assert to_provider.headers["location"].startswith(oauth.base_url)
        async with httpx.AsyncClient() as provider_side:
            callback = (await provider_side.get(to_provider.headers["location"])).headers[
                "location"]
        back = await browser.get(callback)
        assert back.status_code == 303 and back.headers["location"].endswith(mailbox_id)
        page = await browser.get("/settings/mailboxes")
        assert "consent given" in main_of(page.text)
        ko = await browser.get("/settings/mailboxes", headers={"Accept-Language": "ko"})
        assert "OAuth 클라이언트" in ko.text and "동의 완료" in ko.text
    view = (await api.get(f"/v1/mailboxes/{mailbox_id}")).json()
    assert view["auth"] == "oauth2" and view["oauth_connected"] and view["healthy"], view


async def _failed_imap_logins(stack) -> float:
    from tests.e2e.test_metrics import scrape, total

    return total(await scrape(stack), "sequences_imap_operation_duration_seconds_count",
                 imap_operation="login", error_type="TokenRefused")
