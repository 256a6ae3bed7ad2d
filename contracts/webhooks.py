"""How webhook deliveries are made, for receivers: the headers and the signature.

A delivery is an HTTPS POST whose body is the event's envelope as JSON (the same document NATS
subscribers get: `docs/schemas/EventEnvelope.json`). It is signed with the webhook's secret:

    Sequences-Signature: t=1795000000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd

`v1` is the hex HMAC-SHA256 of `"<t>.<body>"` with the secret as key, `t` the Unix time of
sending. A receiver recomputes it (`verify_signature` below), compares in constant time, and
refuses a `t` too far from its own clock (replays). Deliveries are at least once: a receiver
drops repeats by `Sequences-Delivery-Id` (or the event id). Deliveries of one enrollment come
in order: the next one waits until the one before was answered 2xx, or given up.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "Sequences-Signature"
EVENT_ID_HEADER = "Sequences-Event-Id"
EVENT_TYPE_HEADER = "Sequences-Event-Type"
DELIVERY_ID_HEADER = "Sequences-Delivery-Id"
ATTEMPT_HEADER = "Sequences-Delivery-Attempt"
EVERY_TYPE = "*"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The value of the signature header for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(secret: str, header: str, body: bytes, now: float,
                     tolerance_seconds: int = 300) -> bool:
    """What a receiver does: the signature matches and its time is within the tolerance."""
    try:
        parts = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_seconds:
        return False
    given = f"t={timestamp},v1={parts.get('v1', '')}"
    return hmac.compare_digest(signature(secret, timestamp, body), given)
