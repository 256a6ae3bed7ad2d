"""Sending one delivery over HTTPS, signed."""

from __future__ import annotations

import ssl
import time
import uuid
from dataclasses import dataclass

import httpx

from contracts import webhooks as w


@dataclass(frozen=True)
class Answer:
    ok: bool
    status: int | None = None
    error: str | None = None


class WebhookPoster:
    """One HTTP client (its connections reused) for every delivery. Redirects are not followed:
    a webhook's URL is where it is delivered, nowhere else."""

    def __init__(self, timeout_seconds: float, ca_file: str | None = None):
        context = ssl.create_default_context()
        if ca_file:  # a private CA, for receivers inside a company network (and tests)
            context.load_verify_locations(ca_file)
        self._client = httpx.AsyncClient(verify=context, timeout=timeout_seconds,
                                         follow_redirects=False, trust_env=False,
                                         headers={"User-Agent": "Sequences-Webhooks/1"})

    async def post(self, url: str, secrets: list[str], body: bytes, delivery_id: uuid.UUID,
                   event_id: uuid.UUID, event_type: str, attempt: int,
                   legacy_headers: bool = False) -> Answer:
        """`secrets`: the current one first, then the previous one during a rotation."""
        # signed with the real time (not the adjustable clock): receivers compare it to theirs
        now = int(time.time())
        keys = [w.signing_key(secret) for secret in secrets]
        headers = {
            "Content-Type": "application/json",
            w.ID_HEADER: str(delivery_id),
            w.TIMESTAMP_HEADER: str(now),
            w.STANDARD_SIGNATURE_HEADER: w.standard_signature(keys, str(delivery_id), now, body),
        }
        if legacy_headers:  # deprecated; its one signature is the current secret's
            headers.update({
                w.SIGNATURE_HEADER: w.signature(keys[0], now, body),
                w.DELIVERY_ID_HEADER: str(delivery_id),
                w.EVENT_ID_HEADER: str(event_id),
                w.EVENT_TYPE_HEADER: event_type,
                w.ATTEMPT_HEADER: str(attempt),
            })
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as error:
            return Answer(ok=False, error=f"{type(error).__name__}: {error}"[:500])
        if 200 <= response.status_code < 300:
            return Answer(ok=True, status=response.status_code)
        return Answer(ok=False, status=response.status_code,
                      error=f"HTTP {response.status_code}: {response.text[:200]}")

    async def close(self) -> None:
        await self._client.aclose()
