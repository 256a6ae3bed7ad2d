"""What every router of the JSON API shares: who is calling (an API key's `Principal`), the
bus to the services in the caller's workspace, the paging parameters, and a bounded body read."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from services.gateway import bus
from services.gateway.accounts import Principal
from services.gateway.bus import problem

Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=500)]

_bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey",
                     description="An API key of your workspace: `Authorization: Bearer sqk_...`")


async def caller(request: Request,
                 _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    """Every /v1 endpoint needs a key (the middleware `authenticate_callers` checked it)."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        raise problem(401, "authorization", "send an API key: Authorization: Bearer <key>")
    return principal


Caller = Annotated[Principal, Depends(caller)]
KEY_REQUIRED = [Depends(caller)]


def workspace_of(request: Request) -> uuid.UUID:
    return request.state.principal.workspace_id


async def ask(request: Request, kind: type[BaseModel], /, **fields):
    """Send a command or query, in the caller's workspace, to its service."""
    return await bus.ask(request.app.state.nc, workspace_of(request), kind, **fields)


async def send(request: Request, message: BaseModel):
    return await bus.send(request.app.state.nc, message)


async def body_up_to(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is over `limit` (read as it streams, so a
    large upload is never held whole)."""
    too_big = f"the file is over {limit // 2**20} MB"
    if int(request.headers.get("content-length") or 0) > limit:
        raise problem(413, "body", too_big)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise problem(413, "body", too_big)
    return bytes(body)
