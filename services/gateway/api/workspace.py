"""The workspace: who am I, its users and API keys (kept by the gateway itself, `accounts.py`)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request

from contracts import commands as c
from contracts.views import ApiKeyPage, ApiKeyView, NewApiKey, UserPage, UserView, WorkspaceView
from services.gateway import accounts
from services.gateway.api.deps import KEY_REQUIRED, Caller, Cursor, Limit
from services.gateway.bus import answered, problem

router = APIRouter(prefix="/v1", tags=["workspace"], dependencies=KEY_REQUIRED)


@router.get("/me", response_model=WorkspaceView)
async def who_am_i(request: Request, me: Caller):
    """The workspace of this API key, and the user it belongs to."""
    async with request.app.state.engine.connect() as conn:
        return await accounts.describe(conn, me)


@router.get("/users", response_model=UserPage)
async def list_users(request: Request, me: Caller, limit: Limit = 50, cursor: Cursor = None):
    items, next_cursor = await _page_of(accounts.list_users, request, me, limit, cursor)
    return UserPage(items=items, next_cursor=next_cursor)


@router.post("/users", status_code=201, response_model=UserView)
async def add_user(body: c.NewUserRequest, request: Request, me: Caller):
    """Add a user to this workspace (then make them a key with `POST /v1/api-keys`)."""
    try:
        async with request.app.state.engine.begin() as conn:
            return await accounts.add_user(conn, me.workspace_id, body.email, body.name)
    except accounts.EmailTaken:
        raise problem(409, "email", "this workspace has a user with this email") from None


@router.get("/api-keys", response_model=ApiKeyPage)
async def list_api_keys(request: Request, me: Caller, limit: Limit = 50, cursor: Cursor = None):
    """This workspace's keys, by prefix (the keys themselves are never shown again)."""
    items, next_cursor = await _page_of(accounts.list_keys, request, me, limit, cursor)
    return ApiKeyPage(items=items, next_cursor=next_cursor)


async def _page_of(lister, request: Request, me: Caller, limit: int, cursor: str | None):
    """A page of the workspace's users or keys: `(items, next_cursor)`; a bad cursor is a 422."""
    async with request.app.state.engine.connect() as conn:
        return await answered(lister(conn, me.workspace_id, limit, cursor))


@router.post("/api-keys", status_code=201, response_model=NewApiKey)
async def create_api_key(body: c.NewApiKeyRequest, request: Request, me: Caller):
    """A new key for you (or another user of this workspace). The key is in this answer only:
    keep it; a repeat of this request (same `Idempotency-Key`) answers without it."""
    user_id = body.user_id or me.user_id
    async with request.app.state.engine.begin() as conn:
        if not await accounts.user_in(conn, me.workspace_id, user_id):
            raise problem(404, "user_id", f"no such user: {user_id}")
        created = await accounts.issue_key(conn, me.workspace_id, user_id, body.name)
    request.state.one_time_fields = ("key",)  # not kept for idempotent repeats
    return created


@router.delete("/api-keys/{key_id}", response_model=ApiKeyView)
async def revoke_api_key(key_id: uuid.UUID, request: Request, me: Caller):
    """Revoke a key: it stops working at once."""
    async with request.app.state.engine.begin() as conn:
        revoked = await accounts.revoke_key(conn, me.workspace_id, key_id)
    if revoked is None:
        raise problem(404, "key_id", f"no such API key: {key_id}")
    return revoked
