"""Webhooks end to end, against a real local HTTPS receiver (its certificate from a throwaway
CA the webhooks service is told to trust): signed, in order per enrollment, retried, given up,
redelivered, and never another workspace's events."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import text

from contracts.webhooks import (
    DELIVERY_ID_HEADER,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    verify_signature,
)
from sequences.db import create_engine
from sequences.devstack.stack import Stack
from tests.e2e.test_flow import SEQUENCE, new_contact
from tests.support import eventually, stack_config


class Receiver:
    """An HTTPS server on 127.0.0.1 keeping every request; `failures[path]` answers that many
    requests to the path with 503 first (`-1`: always)."""

    def __init__(self, cert: str, key: str):
        self.received: list[dict] = []
        self.failures: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                left = receiver.failures.get(self.path, 0)
                if left:
                    receiver.failures[self.path] = left - 1 if left > 0 else left
                    self.send_response(503)
                else:
                    receiver.received.append({"path": self.path, "headers": dict(self.headers),
                                              "body": body, "at": time.monotonic()})
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

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


async def register(api, url: str, types=("*",)) -> dict:
    response = await api.post("/v1/webhooks", json={"url": url, "event_types": list(types)})
    assert response.status_code == 201, response.text
    return response.json()


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
    hook = await register(api, receiver.url("/all"))
    assert hook["secret"].startswith("whsec_") and hook["event_types"] == ["*"]
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
        headers, body = request["headers"], request["body"]
        assert verify_signature(hook["secret"], headers[SIGNATURE_HEADER], body, time.time())
        assert not verify_signature("whsec_wrong", headers[SIGNATURE_HEADER], body, time.time())
        assert headers[EVENT_ID_HEADER] == json.loads(body)["event_id"]
        assert json.loads(body)["workspace_id"] == stack.workspace["workspace_id"]
    log = (await api.get(f"/v1/webhooks/{hook['webhook_id']}/deliveries",
                         params={"limit": 500})).json()["items"]
    delivered = {d["delivery_id"] for d in log if d["state"] == "delivered"}
    assert {r["headers"][DELIVERY_ID_HEADER] for r in receiver.at("/all")} <= delivered


async def test_a_failing_receiver_is_retried_with_later_events_held_back_then_given_up(
        stack, api, receiver):
    receiver.failures["/flaky"] = 2
    flaky = await register(api, receiver.url("/flaky"), ["ContactEnrolled", "StepDue"])
    receiver.failures["/down"] = -1
    down = await register(api, receiver.url("/down"), ["ContactEnrolled"])
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
    await eventually(lambda: _async(any(r["headers"][DELIVERY_ID_HEADER] == failed["delivery_id"]
                                        for r in receiver.at("/down"))), timeout=30)


async def test_another_workspace_gets_none_of_our_events_and_bad_webhooks_are_refused(
        stack, api, receiver):
    made = subprocess.run(
        [sys.executable, "-m", "sequences.cli", "admin", "create-workspace", "B",
         "--email", "b@b.example", "--json"],
        env={**os.environ, **stack.env()}, capture_output=True, text=True, check=True)
    theirs = json.loads(made.stdout)
    headers = {"Authorization": f"Bearer {theirs['api_key']}"}
    hook = (await api.post("/v1/webhooks", headers=headers, json={
        "url": receiver.url("/theirs"), "event_types": ["*"]})).json()
    ours = await enrolled(api)
    await eventually(lambda: _async(any(json.loads(r["body"])["data"].get("enrollment_id") == ours
                                        for r in receiver.at("/all"))), timeout=30)
    assert not [r for r in receiver.at("/theirs")
                if json.loads(r["body"])["workspace_id"] != theirs["workspace_id"]]
    assert (await api.get(f"/v1/webhooks/{hook['webhook_id']}")).status_code == 404
    bad = {
        "url": {"url": "http://127.0.0.1/hook", "event_types": ["*"]},
        "event_types": {"url": "https://example.com/hook", "event_types": ["NoSuchEvent"]},
    }
    for field, body in bad.items():
        response = await api.post("/v1/webhooks", json=body)
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == field


async def _async(value):
    return value or None
