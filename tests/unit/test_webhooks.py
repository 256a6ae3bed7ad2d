"""Webhooks, the pure part: signatures, retry delays, ordering keys, who wants what."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from contracts.base import EventEnvelope
from contracts.webhooks import signature, verify_signature
from services.webhooks.domain import RetryPolicy, Wanted, ordering_key

SECRET = "whsec_test"
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
    assert not verify_signature("whsec_other", header, BODY, now=NOW)
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
