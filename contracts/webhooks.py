"""How webhook deliveries are made, for receivers: the headers, the body and the signature.

Deliveries follow the Standard Webhooks specification (https://www.standardwebhooks.com), so a
receiver verifies them with an off-the-shelf library (`standardwebhooks` for Python, Node, Go,
...). A delivery is an HTTPS POST whose body is the event's envelope as JSON (the document NATS
subscribers get, `docs/schemas/EventEnvelope.json`) with the spec's `timestamp` (when the event
happened) beside its `type`: `WebhookPayload` below. Its headers:

    webhook-id: 5f0c...           the delivery's id: the same on every retry (drop repeats by it)
    webhook-timestamp: 1795000000 Unix seconds of this attempt (refuse one too far from your clock)
    webhook-signature: v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=

`v1,` is followed by the base64 HMAC-SHA256 of `"<webhook-id>.<webhook-timestamp>.<body>"`, keyed
with the secret's bytes (the base64 after `whsec_`). During a secret rotation the header holds
one signature per live secret, separated by spaces: a receiver with either secret verifies.

Deliveries of one enrollment come in order: the next one waits until the one before was answered
2xx, or given up; so do those of one contact.

A contact created by a CSV import is delivered as a `ContactCreated` like any other, although
the log holds it as one row of its chunk's `ContactsImported` (which is never delivered as
such, and cannot be asked for): its envelope's `stream_id` and `version` are the chunk's, its
`event_id` is the same on every delivery of that contact's creation.

Deprecated (kept for one release, per webhook, `legacy_headers`; on for webhooks registered
before the Standard Webhooks headers): `Sequences-Signature: t=<unix seconds>,v1=<hex
HMAC-SHA256 of "<t>.<body>">` keyed with the same secret bytes (the current secret's), and
`Sequences-Delivery-Id`, `Sequences-Event-Id`, `Sequences-Event-Type`,
`Sequences-Delivery-Attempt`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, Field

from contracts.base import EventEnvelope

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
STANDARD_SIGNATURE_HEADER = "webhook-signature"
# deprecated: only for webhooks with `legacy_headers`
SIGNATURE_HEADER = "Sequences-Signature"
EVENT_ID_HEADER = "Sequences-Event-Id"
EVENT_TYPE_HEADER = "Sequences-Event-Type"
DELIVERY_ID_HEADER = "Sequences-Delivery-Id"
ATTEMPT_HEADER = "Sequences-Delivery-Attempt"
EVERY_TYPE = "*"
# event types no webhook receives as such (each is delivered as the events it stands for)
UNDELIVERED_TYPES = frozenset({"ContactsImported"})

SECRET_PREFIX = "whsec_"
# the spec's range for a secret's key (Svix's too): 24 to 64 random bytes
SHORTEST_KEY, LONGEST_KEY = 24, 64


class WebhookPayload(EventEnvelope):
    """The body of a delivery: the event's envelope, with the Standard Webhooks `timestamp`."""

    timestamp: datetime = Field(description="when the event happened (its `occurred_at`)")

    @classmethod
    def of(cls, envelope: EventEnvelope) -> WebhookPayload:
        return cls.model_construct(**dict(envelope), timestamp=envelope.occurred_at)


def new_secret() -> str:
    """A secret we make: 32 random bytes in the spec's `whsec_<base64>` form."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signing_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret: its decoded bytes (ValueError if not one)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"must be in the form {SECRET_PREFIX}<base64>")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"must be in the form {SECRET_PREFIX}<base64> (standard base64,"
                         " with its = padding)") from None
    if not SHORTEST_KEY <= len(key) <= LONGEST_KEY:
        raise ValueError(f"must hold {SHORTEST_KEY} to {LONGEST_KEY} bytes after {SECRET_PREFIX}"
                         f" (this one holds {len(key)})")
    return key


def _checked_secret(secret: str) -> str:
    signing_key(secret)
    return secret


WebhookSecret = Annotated[str, Field(max_length=200, examples=[
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]), AfterValidator(_checked_secret)]


def standard_signature(keys: list[bytes], message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one `v1,<base64>` per key, space-separated."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return " ".join("v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
                    .decode() for key in keys)


def signature(key: bytes, timestamp: int, body: bytes) -> str:
    """Deprecated `Sequences-Signature` value for `body` sent at `timestamp`."""
    mac = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(key: bytes, header: str, body: bytes, now: float,
                     tolerance_seconds: int = 300) -> bool:
    """What a receiver of the deprecated header does: the signature matches and its time is
    within the tolerance. (Receivers of the standard headers use a Standard Webhooks library.)"""
    try:
        parts = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_seconds:
        return False
    given = f"t={timestamp},v1={parts.get('v1', '')}"
    return hmac.compare_digest(signature(key, timestamp, body), given)
