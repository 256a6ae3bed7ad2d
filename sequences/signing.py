"""Signed tokens for links in emails (open pixel, unsubscribe): HMAC-SHA256 over the payload
with `SEQUENCES_SECRET`, so nobody can forge one for another contact or message."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os


class BadToken(Exception):
    pass


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    def __init__(self, secret: bytes):
        if len(secret) < 16:
            raise ValueError("SEQUENCES_SECRET must be at least 16 bytes")
        self._secret = secret

    def sign(self, purpose: str, payload: dict) -> str:
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{self._mac(purpose, body)}"

    def verify(self, purpose: str, token: str) -> dict:
        body, _, mac = token.partition(".")
        # compared as bytes: a forged token may hold any character (compare_digest wants ASCII)
        expected = self._mac(purpose, body).encode()
        if not mac or not hmac.compare_digest(mac.encode("utf-8", "replace"), expected):
            raise BadToken("the token's signature does not match")
        try:
            payload = json.loads(_unb64(body))
        except ValueError:
            raise BadToken("the token is malformed") from None
        if not isinstance(payload, dict):
            raise BadToken("the token is malformed")
        return payload

    def _mac(self, purpose: str, body: str) -> str:
        # the purpose is signed too: an open-tracking token is no unsubscribe token
        digest = hmac.new(self._secret, f"{purpose}:{body}".encode(), hashlib.sha256).digest()
        return _b64(digest[:20])


def signer_from_env() -> Signer:
    """From `SEQUENCES_SECRET` (the dev stack makes a random one and keeps it in its data dir)."""
    if secret := os.environ.get("SEQUENCES_SECRET"):
        return Signer(secret.encode())
    raise RuntimeError("SEQUENCES_SECRET is not set (see the README, 'Configuration')")
