"""Webhooks end to end, against a real local HTTPS receiver (its certificate from a throwaway
CA the webhooks service is told to trust) that verifies every delivery with the
`standardwebhooks` library, as a receiving team would: signed, in order per enrollment, retried,
given up, redelivered (a replay the receiver recognises by `webhook-id`), signed with both
secrets during a rotation and only the new one after it, the deprecated headers only where
asked for, and never another workspace's events."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import standardwebhooks.webhooks
from sqlalchemy import text
from standardwebhooks import Webhook, WebhookVerificationError

from contracts.webhooks import (
    DELIVERY_ID_HEADER,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    signing_key,
    verify_signature,
)
from sequences.db import create_engine
from sequences.devstack.stack import Stack
from tests.e2e.test_flow import SEQUENCE, new_contact
from tests.support import create_workspace, eventually, stack_config


class Receiver:
    """An HTTPS server on 127.0.0.1 keeping every request; `failures[path]` answers that many
    requests to the path with 503 first (`-1`: always). Every request is verified with the
    `standardwebhooks` library against each secret `secrets[path]` names (a receiving team
    holding that secret): `verified_by` lists the names that verified it, and one no secret
    verifies is answered 401. `replay` marks a `webhook-id` the path has seen before."""

    def __init__(self, cert: str, key: str):
        self.received: list[dict] = []
        self.failures: dict[str, int] = {}
        self.secrets: dict[str, dict[str, str]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                left = receiver.failures.get(self.path, 0)
                if left:
                    receiver.failures[self.path] = left - 1 if left > 0 else left
                    self.send_response(503)
                    self.end_headers()
                    return
                headers = dict(self.headers)
                verified_by = receiver.verify(self.path, headers, body)
                seen = {r["headers"]["webhook-id"] for r in receiver.at(self.path)}
                receiver.received.append({"path": self.path, "headers": headers, "body": body,
                                          "at": time.monotonic(), "verified_by": verified_by,
                                          "replay": headers.get("webhook-id") in seen})
                self.send_response(204 if verified_by else 401)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def verify(self, path: str, headers: dict, body: bytes) -> set[str]:
        verified = set()
        for name, secret in self.secrets.get(path, {}).items():
            try:
                Webhook(secret).verify(body, headers)
                verified.add(name)
            except WebhookVerificationError:
                pass
        return verified

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}{path}"

    def at(self, path: str) -> list[dict]:
        return [r for r in self.received if r["path"] == path]


def throwaway_certificate(directory) -> tuple[str, str]:
    cert, key = str(directory / "receiver.pem"), str(directory / "receiver.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return throwaway_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def receiver(certificate):
    serving = Receiver(*certificate)
    yield serving
    serving.server.shutdown()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, certificate):
    env = {"webhooks": {"WEBHOOK_CA_FILE": certificate[0], "WEBHOOK_RETRY_SECONDS": "0.2",
                        "WEBHOOK_MAX_ATTEMPTS": "3"}}
    with Stack(stack_config(tmp_path_factory, service_env=env)) as running:
        yield running


async def register(api, receiver, path: str, types=("*",), **fields) -> dict:
    """A webhook to the receiver's `path`, whose secret the receiver holds (as "hook")."""
    response = await api.post("/v1/webhooks", json={"url": receiver.url(path),
                                                    "event_types": list(types), **fields})
    assert response.status_code == 201, response.text
    created = response.json()
    receiver.secrets[path] = {"hook": created["secret"]}
    return created


async def enrolled(api) -> str:
    sequence_id = (await api.post("/v1/sequences", json=SEQUENCE)).json()["id"]
    contact_id, _ = await new_contact(api)
    response = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                              json={"contact_id": contact_id})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def log_order(stack, enrollment_id: str) -> list[str]:
    """The enrollment's events (every stream of its story) in log order."""
    engine = create_engine(stack.database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text(
                "SELECT event_id FROM eventlog.events WHERE stream_id = ANY(:streams)"
                " ORDER BY position"),
                {"streams": [f"{c}-{enrollment_id}" for c in ("enrollment", "schedule",
                                                               "delivery")]})
            return [str(r.event_id) for r in rows]
    finally:
        await engine.dispose()


async def test_deliveries_are_signed_and_in_the_order_of_the_log(stack, api, receiver):
    hook = await register(api, receiver, "/all")
    assert hook["secret"].startswith("whsec_") and len(signing_key(hook["secret"])) == 32
    assert hook["event_types"] == ["*"] and hook["legacy_headers"] is False
    enrollment_id = await enrolled(api)

    def of_enrollment():
        return [json.loads(r["body"]) for r in receiver.at("/all")
                if json.loads(r["body"])["data"].get("enrollment_id") == enrollment_id]

    # the first email went out, and its EmailSent and EnrollmentStepCompleted reached us
    await eventually(lambda: _async(len({e["type"] for e in of_enrollment()}
                                        & {"EmailSent", "EnrollmentStepCompleted"}) == 2),
                     timeout=30)
    received = [e["event_id"] for e in of_enrollment()]
    expected = await log_order(stack, enrollment_id)
    assert received == expected[:len(received)] and len(received) >= 4
    for request in receiver.at("/all"):
        headers, body = request["headers"], json.loads(request["body"])
        assert request["verified_by"] == {"hook"}, "the standardwebhooks library verified it"
        assert not request["replay"]
        assert body["workspace_id"] == stack.workspace["workspace_id"]
        assert body["timestamp"] == body["occurred_at"] and body["type"]
        assert SIGNATURE_HEADER not in headers and EVENT_ID_HEADER not in headers  # deprecated
    with pytest.raises(WebhookVerificationError):
        request = receiver.at("/all")[0]
        Webhook("whsec_" + "A" * 43 + "=").verify(request["body"], request["headers"])
    log = (await api.get(f"/v1/webhooks/{hook['webhook_id']}/deliveries",
                         params={"limit": 500})).json()["items"]
    delivered = {d["delivery_id"] for d in log if d["state"] == "delivered"}
    assert {r["headers"]["webhook-id"] for r in receiver.at("/all")} <= delivered

    # a redelivery is the same delivery (same webhook-id), freshly signed: a replay to drop
    first = receiver.at("/all")[0]
    again = await api.post(f"/v1/webhooks/{hook['webhook_id']}/deliveries/"
                           f"{first['headers']['webhook-id']}/redeliver")
    assert again.status_code == 200, again.text
    replayed = await eventually(lambda: _async([r for r in receiver.at("/all") if r["replay"]]),
                                timeout=30)
    assert replayed[0]["headers"]["webhook-id"] == first["headers"]["webhook-id"]
    assert replayed[0]["verified_by"] == {"hook"} and replayed[0]["body"] == first["body"]


def test_a_delivery_verified_too_late_is_refused_by_the_library(receiver, monkeypatch):
    """A captured delivery, replayed to the receiver ten minutes later: the library refuses it
    for its timestamp (its tolerance is five minutes), though the signature is right."""
    *_, request = [r for r in receiver.received if r["verified_by"]]  # the latest
    secret = receiver.secrets[request["path"]]["hook"]
    Webhook(secret).verify(request["body"], request["headers"])  # fresh enough now

    class TenMinutesLater(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) + timedelta(minutes=10)

    monkeypatch.setattr(standardwebhooks.webhooks, "datetime", TenMinutesLater)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(request["body"], request["headers"])


async def test_a_failing_receiver_is_retried_with_later_events_held_back_then_given_up(
        stack, api, receiver):
    receiver.failures["/flaky"] = 2
    flaky = await register(api, receiver, "/flaky", ["ContactEnrolled", "StepDue"])
    receiver.failures["/down"] = -1
    down = await register(api, receiver, "/down", ["ContactEnrolled"])
    enrollment_id = await enrolled(api)

    async def both_delivered():
        got = [json.loads(r["body"]) for r in receiver.at("/flaky")]
        got = [e for e in got if e["data"]["enrollment_id"] == enrollment_id]
        return got if len(got) == 2 else None

    got = await eventually(both_delivered, timeout=30)
    assert [e["type"] for e in got] == ["ContactEnrolled", "StepDue"]  # StepDue waited
    log = (await api.get(f"/v1/webhooks/{flaky['webhook_id']}/deliveries")).json()["items"]
    enrolled_delivery = next(d for d in log if d["event_type"] == "ContactEnrolled"
                             and d["event_id"] == got[0]["event_id"])
    assert (enrolled_delivery["state"], enrolled_delivery["attempts"]) == ("delivered", 3)
    assert enrolled_delivery["last_status"] == 204

    async def given_up():
        items = (await api.get(f"/v1/webhooks/{down['webhook_id']}/deliveries",
                               params={"state": "failed"})).json()["items"]
        return items or None

    [failed, *_] = await eventually(given_up, timeout=30)
    assert (failed["attempts"], failed["last_status"]) == (3, 503)
    assert "503" in failed["last_error"]
    receiver.failures["/down"] = 0
    again = await api.post(f"/v1/webhooks/{down['webhook_id']}/deliveries/"
                           f"{failed['delivery_id']}/redeliver")
    assert again.status_code == 200 and again.json()["state"] == "pending"
    await eventually(lambda: _async(any(r["headers"]["webhook-id"] == failed["delivery_id"]
                                        for r in receiver.at("/down"))), timeout=30)


async def test_another_workspace_gets_none_of_our_events_and_bad_webhooks_are_refused(
        stack, api, receiver):
    theirs = create_workspace(stack, "B", "b@b.example")
    headers = {"Authorization": f"Bearer {theirs['api_key']}"}
    hook = (await api.post("/v1/webhooks", headers=headers, json={
        "url": receiver.url("/theirs"), "event_types": ["*"]})).json()
    receiver.secrets["/theirs"] = {"hook": hook["secret"]}
    ours = await enrolled(api)
    await eventually(lambda: _async(any(json.loads(r["body"])["data"].get("enrollment_id") == ours
                                        for r in receiver.at("/all"))), timeout=30)
    assert not [r for r in receiver.at("/theirs")
                if json.loads(r["body"])["workspace_id"] != theirs["workspace_id"]]
    assert (await api.get(f"/v1/webhooks/{hook['webhook_id']}")).status_code == 404
    bad = {
        "url": {"url": "http://127.0.0.1/hook", "event_types": ["*"]},
        "event_types": {"url": "https://example.com/hook", "event_types": ["NoSuchEvent"]},
        "secret": {"url": "https://example.com/hook", "event_types": ["*"],
                   "secret": "my-own-secret"},
    }
    for field, body in bad.items():
        response = await api.post("/v1/webhooks", json=body)
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == field


async def test_a_secret_rotation_signs_with_both_secrets_then_only_the_new_one(
        stack, api, receiver):
    hook = await register(api, receiver, "/rotating", ["ContactEnrolled"])
    old = hook["secret"]
    rotated = await api.post(f"/v1/webhooks/{hook['webhook_id']}/secret/rotate",
                             json={"grace_period_seconds": 24 * 3600})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new != old and rotated.json()["rotation_ends_at"]
    # one receiver kept the old secret, another took the new one already
    receiver.secrets["/rotating"] = {"old": old, "new": new}
    again = await api.post(f"/v1/webhooks/{hook['webhook_id']}/secret/rotate", json={})
    assert again.status_code == 409 and again.json()["errors"][0]["field"] == "secret"

    during = await enrolled(api)
    [delivery] = await eventually(lambda: _async(_of("/rotating", receiver, during)), timeout=30)
    assert delivery["verified_by"] == {"old", "new"}
    assert len(delivery["headers"]["webhook-signature"].split(" ")) == 2

    # two days later the grace period is over: only the new secret signs
    assert (await api.post("/v1/dev/clock/advance", json={"by": "2d"})).status_code == 200

    async def rotation_over():
        view = (await api.get(f"/v1/webhooks/{hook['webhook_id']}")).json()
        return view["rotation_ends_at"] is None

    await eventually(rotation_over, timeout=30)
    after = await enrolled(api)
    [delivery] = await eventually(lambda: _async(_of("/rotating", receiver, after)), timeout=30)
    assert delivery["verified_by"] == {"new"}
    assert len(delivery["headers"]["webhook-signature"].split(" ")) == 1

    # the next rotation may start now; ended early, only its new secret signs at once
    bad = await api.post(f"/v1/webhooks/{hook['webhook_id']}/secret/rotate",
                         json={"secret": "whsec_short"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "secret"
    mine = "whsec_" + "QUJD" * 8
    third = await api.post(f"/v1/webhooks/{hook['webhook_id']}/secret/rotate",
                           json={"secret": mine})
    assert third.status_code == 200 and third.json()["secret"] == mine
    ended = await api.delete(f"/v1/webhooks/{hook['webhook_id']}/secret/previous")
    assert ended.status_code == 200 and ended.json()["rotation_ends_at"] is None
    receiver.secrets["/rotating"] = {"new": new, "mine": mine}
    last = await enrolled(api)
    [delivery] = await eventually(lambda: _async(_of("/rotating", receiver, last)), timeout=30)
    assert delivery["verified_by"] == {"mine"}


async def test_the_deprecated_headers_only_where_asked_for(stack, api, receiver):
    hook = await register(api, receiver, "/legacy", ["ContactEnrolled"], legacy_headers=True)
    assert hook["legacy_headers"] is True
    enrollment_id = await enrolled(api)
    [delivery] = await eventually(lambda: _async(_of("/legacy", receiver, enrollment_id)),
                                  timeout=30)
    headers, body = delivery["headers"], delivery["body"]
    assert delivery["verified_by"] == {"hook"}  # the standard headers are there too
    assert verify_signature(signing_key(hook["secret"]), headers[SIGNATURE_HEADER], body,
                            time.time())
    assert headers[DELIVERY_ID_HEADER] == headers["webhook-id"]
    assert headers[EVENT_ID_HEADER] == json.loads(body)["event_id"]
    changed = await api.patch(f"/v1/webhooks/{hook['webhook_id']}",
                              json={"legacy_headers": False})
    assert changed.status_code == 200 and changed.json()["legacy_headers"] is False
    later = await enrolled(api)
    [delivery] = await eventually(lambda: _async(_of("/legacy", receiver, later)), timeout=30)
    assert SIGNATURE_HEADER not in delivery["headers"]


def _of(path: str, receiver: Receiver, enrollment_id: str) -> list[dict]:
    return [r for r in receiver.at(path)
            if json.loads(r["body"])["data"].get("enrollment_id") == enrollment_id]


async def _async(value):
    return value or None


async def test_each_imported_contact_is_delivered_as_a_contact_created(stack, api, receiver):
    """An import holds its new contacts as one `ContactsImported` a chunk; receivers get each
    contact as a `ContactCreated`, as they do a contact created alone, and cannot ask for the
    chunk itself."""
    await register(api, receiver, "/created", ["ContactCreated"])
    tag = f"hook-{time.monotonic_ns()}"
    emails = [f"n{i}.{tag}@customer.example" for i in range(3)]
    csv_text = "name,email,tags\n" + "".join(f"고객{i},{e},{tag}\n" for i, e in enumerate(emails))
    report = (await api.post("/v1/contacts/import", content=csv_text.encode(),
                             headers={"content-type": "text/csv"})).json()
    assert report["created"] == 3, report
    alone_id, alone = await new_contact(api)

    def created():
        bodies = [json.loads(r["body"]) for r in receiver.at("/created")]
        return _async({b["data"]["email"]: b for b in bodies
                       if b["data"]["email"] in {*emails, alone}} if len(bodies) >= 4 else None)

    bodies = await eventually(created, timeout=30)
    assert sorted(bodies) == sorted([*emails, alone])
    assert {b["type"] for b in bodies.values()} == {"ContactCreated"}
    listed = (await api.get("/v1/contacts", params={"tag": tag})).json()["items"]
    assert {c["email"]: c["contact_id"] for c in listed} == {
        e: bodies[e]["data"]["contact_id"] for e in emails}
    assert bodies[alone]["data"]["contact_id"] == alone_id
    assert bodies[emails[0]]["data"]["name"] == "고객0"
    assert len({b["event_id"] for b in bodies.values()}) == 4
    assert all(r["verified_by"] == {"hook"} and not r["replay"]
               for r in receiver.at("/created"))
    chunk = await api.post("/v1/webhooks", json={"url": receiver.url("/chunk"),
                                                  "event_types": ["ContactsImported"]})
    assert chunk.status_code == 422 and chunk.json()["errors"][0]["field"] == "event_types"
