"""`Idempotency-Key` on POST: a repeat of a request returns the first one's response.

Entries are kept per workspace (the caller's API key says which), in a NATS key-value bucket
for a day. The first request creates its entry as "pending" (`create` fails if the entry exists, so
of two racing repeats only one runs); a repeat while it runs gets 409, a repeat afterwards the
stored response, and the same key with a different request 422. A response of 5xx is not kept:
the request may be tried again.
"""

from __future__ import annotations

import hashlib
import json
import re

from fastapi import Request, Response
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError

from contracts.base import FieldError, Problem
from contracts.subjects import IDEMPOTENCY_BUCKET

HEADER = "Idempotency-Key"
KEEP_SECONDS = 24 * 3600
_VALID = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces


async def bucket(js):
    try:
        return await js.key_value(IDEMPOTENCY_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(bucket=IDEMPOTENCY_BUCKET, history=1, ttl=KEEP_SECONDS))


async def idempotent(request: Request, call_next, problem_response) -> Response:
    """Middleware body: pass through unless a POST carries an Idempotency-Key."""
    key = request.headers.get(HEADER)
    principal = getattr(request.state, "principal", None)
    if request.method != "POST" or key is None or principal is None:
        return await call_next(request)  # (without a key the route refuses it anyway)
    if not _VALID.match(key):
        return problem_response(_problem(422, "printable ASCII without spaces, 1 to 200"
                                              " characters"))
    body = await request.body()
    fingerprint = hashlib.sha256(body).hexdigest()
    # scoped by workspace and path: two workspaces may well pick the same key
    entry = hashlib.sha256(
        f"{principal.workspace_id}\n{request.url.path}\n{key}".encode()).hexdigest()
    kv = await bucket(request.app.state.nc.jetstream())
    try:
        await kv.create(entry, json.dumps({"pending": True, "request": fingerprint}).encode())
    except KeyWrongLastSequenceError:
        return await _repeat(kv, entry, fingerprint, problem_response)
    response = await call_next(request)
    content = b"".join([chunk async for chunk in response.body_iterator])
    if response.status_code >= 500:
        await kv.delete(entry)
    else:
        await kv.put(entry, json.dumps({
            "request": fingerprint, "status": response.status_code,
            "media_type": response.headers.get("content-type"),
            "body": _without_secrets(content, getattr(request.state, "one_time_fields", ())),
        }).encode())
    return Response(content, status_code=response.status_code,
                    headers=dict(response.headers))


def _without_secrets(content: bytes, one_time_fields: tuple[str, ...]) -> str:
    """What a repeat answers: the first response, with what may be shown only once (a new API
    key, a webhook secret) as null, so no secret is ever kept outside its hash."""
    if not one_time_fields:
        return content.decode()
    body = json.loads(content)
    return json.dumps({**body, **{name: None for name in one_time_fields if name in body}})


async def _repeat(kv, entry: str, fingerprint: str, problem_response) -> Response:
    first = json.loads((await kv.get(entry)).value)
    if first["request"] != fingerprint:
        return problem_response(_problem(422, "this key was used for a different request"))
    if first.get("pending"):
        return problem_response(_problem(409, "the first request with this key is still running"))
    return Response(first["body"].encode(), status_code=first["status"],
                    media_type=first["media_type"], headers={"Idempotent-Replayed": "true"})


def _problem(status: int, message: str) -> Problem:
    title = {409: "Conflict", 422: "Invalid input"}[status]
    return Problem(status=status, title=title, detail=message,
                   errors=[FieldError(field=HEADER, message=message)])
