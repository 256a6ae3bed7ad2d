"""Webhooks, the pure part: signatures (checked with the `standardwebhooks` library), secrets,
the payload, retry delays, ordering keys, who wants what."""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from standardwebhooks import Webhook, WebhookVerificationError

from contracts.base import EventEnvelope
from contracts.commands import SecretRotation, WebhookRequest
from contracts.webhooks import (
    WebhookPayload,
    new_secret,
    signature,
    signing_key,
    standard_signature,
    verify_signature,
)
from services.webhooks.domain import RetryPolicy, Wanted, ordering_key

SECRET = b"a legacy secret's bytes"
BODY = b'{"event_id": "x"}'
NOW = 1_795_000_000
WORKSPACE = uuid.uuid4()


def envelope(type_: str = "EmailSent", workspace=WORKSPACE, **data) -> EventEnvelope:
    return EventEnvelope(event_id=uuid.uuid4(), workspace_id=workspace, stream_id="delivery-1",
                         version=1, type=type_, schema_version=1,
                         occurred_at=datetime(2026, 11, 26, tzinfo=UTC),
                         correlation_id=uuid.uuid4(), data=data)


def test_a_signature_verifies_only_with_its_secret_body_and_a_fresh_time():
    header = signature(SECRET, NOW, BODY)
    assert header.startswith(f"t={NOW},v1=") and len(header.split("v1=")[1]) == 64
    assert verify_signature(SECRET, header, BODY, now=NOW + 10)
    assert not verify_signature(b"whsec_other", header, BODY, now=NOW)
    assert not verify_signature(SECRET, header, BODY + b" ", now=NOW)
    assert not verify_signature(SECRET, header, BODY, now=NOW + 301)  # a replay, later
    assert not verify_signature(SECRET, header.replace(f"t={NOW}", f"t={NOW + 1}"), BODY, NOW)
    for garbage in ("", "t=x,v1=y", "v1=abc", "t=1"):
        assert not verify_signature(SECRET, garbage, BODY, now=NOW)


def test_retries_double_up_to_an_hour_and_stop_after_the_last_attempt():
    policy = RetryPolicy(first_delay=timedelta(seconds=10), max_attempts=12)
    start = datetime(2026, 11, 26, tzinfo=UTC)
    delays = [policy.after_failure(n, start) - start for n in range(1, 12)]
    assert delays[:4] == [timedelta(seconds=s) for s in (10, 20, 40, 80)]
    assert max(delays) == timedelta(hours=1) and delays == sorted(delays)
    assert policy.after_failure(12, start) is None


def test_an_enrollments_events_share_one_ordering_key_whatever_their_stream():
    enrollment_id = str(uuid.uuid4())
    assert ordering_key(envelope(enrollment_id=enrollment_id)) == f"enrollment-{enrollment_id}"
    assert ordering_key(envelope("SequenceCreated", sequence_id="s")) == "delivery-1"


def test_a_webhook_wants_its_types_of_its_own_workspace_only():
    replies = Wanted(uuid.uuid4(), WORKSPACE, ("EnrollmentReplied",))
    every = Wanted(uuid.uuid4(), WORKSPACE, ("*",))
    assert replies.wants(envelope("EnrollmentReplied"))
    assert not replies.wants(envelope("EmailSent"))
    assert every.wants(envelope("EmailSent"))
    assert not every.wants(envelope("EmailSent", workspace=uuid.uuid4()))


def standard_headers(secrets: list[str], message_id: str, at: int, body: bytes) -> dict:
    keys = [signing_key(secret) for secret in secrets]
    return {"webhook-id": message_id, "webhook-timestamp": str(at),
            "webhook-signature": standard_signature(keys, message_id, at, body)}


def test_the_standard_signature_verifies_with_the_standardwebhooks_library():
    secret, other = new_secret(), new_secret()
    now = int(time.time())
    headers = standard_headers([secret], "msg_1", now, BODY)
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY + b" ", headers)
    with pytest.raises(WebhookVerificationError):  # the id is signed too
        Webhook(secret).verify(BODY, {**headers, "webhook-id": "msg_2"})
    stale = standard_headers([secret], "msg_1", now - 600, BODY)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(BODY, stale)


def test_during_a_rotation_either_secret_verifies():
    current, previous = new_secret(), new_secret()
    headers = standard_headers([current, previous], "msg_1", int(time.time()), BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (current, previous):
        Webhook(secret).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)


def test_our_secrets_are_whsec_base64_of_32_bytes_and_a_callers_must_be_too():
    secret = new_secret()
    assert secret.startswith("whsec_") and len(signing_key(secret)) == 32
    assert new_secret() != secret
    good = "whsec_" + base64.b64encode(b"k" * 24).decode()
    assert WebhookRequest(url="https://example.com/h", event_types=["*"], secret=good).secret == good
    for bad in ("not-whsec", "whsec_***", "whsec_" + base64.b64encode(b"short").decode(),
                "whsec_" + base64.urlsafe_b64encode(b"\xff" * 30).decode()):
        with pytest.raises(ValidationError) as refused:
            WebhookRequest(url="https://example.com/h", event_types=["*"], secret=bad)
        assert refused.value.errors()[0]["loc"] == ("secret",)
        with pytest.raises(ValidationError) as refused:
            SecretRotation(secret=bad)
        assert refused.value.errors()[0]["loc"] == ("secret",)


def test_new_webhooks_have_no_legacy_headers_and_a_rotations_grace_is_bounded():
    assert not WebhookRequest(url="https://example.com/h", event_types=["*"]).legacy_headers
    assert SecretRotation().grace_period_seconds == 24 * 3600
    for bad in (-1, 8 * 24 * 3600):
        with pytest.raises(ValidationError) as refused:
            SecretRotation(grace_period_seconds=bad)
        assert refused.value.errors()[0]["loc"] == ("grace_period_seconds",)


def test_the_payload_is_the_envelope_with_the_standard_timestamp_beside_its_type():
    event = envelope(enrollment_id="e")
    body = json.loads(WebhookPayload.of(event).model_dump_json())
    assert body["type"] == "EmailSent" and body["timestamp"] == "2026-11-26T00:00:00Z"
    assert body == {**json.loads(event.model_dump_json()), "timestamp": body["timestamp"]}


def test_the_published_webhooks_document_matches_the_contracts(tmp_path, repo_root):
    """docs/webhooks-openapi.json: regenerate it with `sequences contracts export`."""
    from contracts.schema import export_webhooks_openapi

    fresh = export_webhooks_openapi(tmp_path / "webhooks-openapi.json").read_text()
    assert (repo_root / "docs" / "webhooks-openapi.json").read_text() == fresh, "regenerate it"


def test_the_api_document_has_a_webhook_per_event_type_with_its_payload_schema(monkeypatch):
    from contracts.base import EVENT_TYPES
    from sequences.config import Settings
    from services.gateway.app import create_app

    settings = Settings(database_url="postgresql://unused", nats_url="nats://unused",
                        smtp_url="smtp://unused", clock="system", gateway_host="127.0.0.1",
                        gateway_port=0, public_url="https://example.com",
                        scheduler_tick_seconds=1, scheduler_max_rate=1, nats_replicas=1,
                        log_level="INFO", health_port=None)
    monkeypatch.setenv("SEQUENCES_SECRET", "only for building the app")
    document = create_app(settings).openapi()
    assert document["openapi"].startswith("3.1") and document["paths"]
    from contracts.webhooks import UNDELIVERED_TYPES

    delivered = {name: event for name, event in EVENT_TYPES.items()
                 if name not in UNDELIVERED_TYPES}
    assert UNDELIVERED_TYPES <= set(EVENT_TYPES)  # (ContactsImported: as its ContactCreated)
    assert set(document["webhooks"]) == set(delivered)
    schemas = document["components"]["schemas"]
    for name, event in delivered.items():
        post = document["webhooks"][name]["post"]
        payload = schemas[post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                          .rsplit("/", 1)[1]]
        assert payload["properties"]["type"]["const"] == name
        assert {"timestamp", "event_id", "data"} <= set(payload["required"])
        data = schemas[payload["properties"]["data"]["$ref"].rsplit("/", 1)[1]]
        assert set(data["properties"]) == set(event.model_json_schema()["properties"])
        assert {p["name"] for p in post["parameters"]} == {
            "webhook-id", "webhook-timestamp", "webhook-signature"}


def test_the_feed_reads_only_the_types_some_webhook_wants():
    from services.webhooks.domain import feed_types

    assert feed_types([]) == set()  # no webhook: nothing to read
    assert feed_types([("EmailSent",), ("EmailSent", "EnrollmentReplied")]) == {
        "EmailSent", "EnrollmentReplied"}
    # an imported contact is delivered as a ContactCreated: its chunk is read for it
    assert feed_types([("ContactCreated",)]) == {"ContactCreated", "ContactsImported"}
    assert feed_types([("EmailSent",), ("*",)]) is None  # every type
