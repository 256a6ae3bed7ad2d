"""The JSON API's middlewares: who calls /v1, idempotent repeats, and the body size limit."""

from __future__ import annotations

from fastapi import Request
from sqlalchemy.exc import DBAPIError

from contracts.base import FieldError, Problem
from sequences import logs
from sequences.messaging import rpc
from services.gateway import accounts
from services.gateway.api.problems import problem_response
from services.gateway.bus import problem
from services.gateway.idempotency import idempotent

MAX_BODY_BYTES = 1024 * 1024
_BAD_KEY = "this API key is not valid (unknown, revoked or malformed)"


async def idempotency(request: Request, call_next):
    return await idempotent(request, call_next, problem_response)


async def authenticate_callers(request: Request, call_next):
    """Who calls /v1 (before idempotency, whose entries are kept per workspace). A request
    without a key goes on and is refused by the route; a wrong key is refused here."""
    request.state.principal = None
    authorization = request.headers.get("authorization")
    if authorization is not None and request.url.path.startswith("/v1/"):
        scheme, _, key = authorization.partition(" ")
        principal = None
        if scheme.lower() == "bearer":
            try:
                principal = await accounts.authenticate(request.app.state.engine, key.strip())
            except DBAPIError:
                return problem_response(Problem(status=503, title="Database unavailable",
                                                detail="retry in a moment"))
        if principal is None:
            return problem_response(problem(401, "authorization", _BAD_KEY).problem)
        request.state.principal = principal
        logs.set_workspace(principal.workspace_id)  # the request's log lines name it
    return await call_next(request)


# CSV uploads (the API's and the web app's): up to 50 MB, checked by the import as it streams
LARGE_BODIES = frozenset({"/v1/contacts/import", "/contacts/import"})


async def limit_body_size(request: Request, call_next):
    """Bodies over 1 MB are refused before they are read, but CSV uploads (`LARGE_BODIES`)."""
    length = request.headers.get("content-length")
    if (request.url.path not in LARGE_BODIES and length and length.isdigit()
            and int(length) > MAX_BODY_BYTES):
        return problem_response(Problem(
            status=413, title=rpc.title_for(413), detail="the body is over 1 MB",
            errors=[FieldError(field="body", message="the body is over 1 MB")]))
    return await call_next(request)
