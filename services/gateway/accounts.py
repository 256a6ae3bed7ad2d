"""Workspaces, their users and API keys: who is calling, and whose data they may touch.

A key is `sqk_` and 40 random URL-safe characters (240 bits). It is shown once, when it is made;
only its SHA-256 is stored (a fast hash is enough for a random secret of that length: there is
no dictionary to try), looked up by equality, and its first characters (`prefix`) are kept to
tell keys apart in lists. A revoked key stops working at once: every request looks its key up.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts.views import ApiKeyView, NewApiKey, UserView, WorkspaceView
from sequences.db import Migrations
from sequences.pagination import decode_moment_and_id, moment_and_id, page_of

MIGRATIONS = Migrations("gateway", Path(__file__).parent / "migrations")
KEY_PREFIX = "sqk_"
_SHOWN_CHARACTERS = 12  # "sqk_" and 8 more: enough to tell a workspace's keys apart


@dataclass(frozen=True)
class Principal:
    """The caller, as its API key says."""

    key_id: uuid.UUID
    workspace_id: uuid.UUID
    user_id: uuid.UUID
    user_email: str


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(30)


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def looks_like_key(key: str) -> bool:
    return key.startswith(KEY_PREFIX) and 20 <= len(key) <= 100 and key.isascii()


# Found and marked used in one round trip; `last_used_at` is written at most once a minute per
# key, so a busy key does not turn every request into a write.
_AUTHENTICATE = text("""
    WITH found AS (
        SELECT k.key_id, k.workspace_id, k.user_id, u.email
        FROM gateway.api_keys k JOIN gateway.users u USING (user_id)
        WHERE k.key_hash = :hash AND k.revoked_at IS NULL
    ), touched AS (
        UPDATE gateway.api_keys SET last_used_at = now()
        WHERE key_id = (SELECT key_id FROM found)
          AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
    )
    SELECT * FROM found
""")


async def authenticate(engine: AsyncEngine, key: str) -> Principal | None:
    if not looks_like_key(key):
        return None
    async with engine.begin() as conn:
        row = (await conn.execute(_AUTHENTICATE, {"hash": key_hash(key)})).first()
    if row is None:
        return None
    return Principal(key_id=row.key_id, workspace_id=row.workspace_id, user_id=row.user_id,
                     user_email=row.email)


async def create_workspace(conn: AsyncConnection, name: str, user_email: str,
                           user_name: str = "") -> tuple[WorkspaceView, NewApiKey]:
    """A workspace, its first user (its admin) and that user's first key (what `sequences admin
    create-workspace` and the embedded stack make)."""
    workspace_id = uuid.uuid4()
    await conn.execute(text("INSERT INTO gateway.workspaces (workspace_id, name)"
                            " VALUES (:w, :name)"), {"w": workspace_id, "name": name})
    user = await add_user(conn, workspace_id, user_email, user_name)
    await conn.execute(text("UPDATE gateway.users SET role = 'admin' WHERE user_id = :u"),
                       {"u": user.user_id})
    key = await issue_key(conn, workspace_id, user.user_id, "first key")
    return WorkspaceView(workspace_id=workspace_id, name=name, user=user), key


async def describe(conn: AsyncConnection, principal: Principal) -> WorkspaceView:
    row = (await conn.execute(text(
        "SELECT w.name AS workspace_name, u.user_id, u.email, u.name, u.created_at"
        " FROM gateway.workspaces w JOIN gateway.users u USING (workspace_id)"
        " WHERE u.user_id = :u"), {"u": principal.user_id})).one()
    return WorkspaceView(workspace_id=principal.workspace_id, name=row.workspace_name,
                         user=UserView(user_id=row.user_id, email=row.email, name=row.name,
                                       created_at=row.created_at))


class EmailTaken(Exception):
    pass


async def add_user(conn: AsyncConnection, workspace_id: uuid.UUID, email: str,
                   name: str = "") -> UserView:
    row = (await conn.execute(text(
        "INSERT INTO gateway.users (user_id, workspace_id, email, name)"
        " VALUES (:u, :w, :email, :name) ON CONFLICT DO NOTHING RETURNING *"),
        {"u": uuid.uuid4(), "w": workspace_id, "email": email, "name": name})).first()
    if row is None:
        raise EmailTaken(email)
    return UserView(user_id=row.user_id, email=row.email, name=row.name,
                    created_at=row.created_at)


async def list_users(conn: AsyncConnection, workspace_id: uuid.UUID, limit: int,
                     cursor: str | None) -> tuple[list[UserView], str | None]:
    after = _after(cursor)
    rows = (await conn.execute(text(
        "SELECT user_id, email, name, created_at FROM gateway.users WHERE workspace_id = :w"
        + (" AND (created_at, user_id) > (:t, :id)" if after else "")
        + " ORDER BY created_at, user_id LIMIT :n"),
        {"w": workspace_id, "n": limit + 1, **after})).all()
    rows, next_cursor = page_of(rows, limit, lambda r: moment_and_id(r.created_at, r.user_id))
    return [UserView(**r._mapping) for r in rows], next_cursor


async def user_in(conn: AsyncConnection, workspace_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    return (await conn.execute(text(
        "SELECT 1 FROM gateway.users WHERE user_id = :u AND workspace_id = :w"),
        {"u": user_id, "w": workspace_id})).first() is not None


async def issue_key(conn: AsyncConnection, workspace_id: uuid.UUID, user_id: uuid.UUID,
                    name: str) -> NewApiKey:
    key = new_key()
    row = (await conn.execute(text(
        "INSERT INTO gateway.api_keys (key_id, workspace_id, user_id, name, prefix, key_hash)"
        " VALUES (:k, :w, :u, :name, :prefix, :hash) RETURNING *"),
        {"k": uuid.uuid4(), "w": workspace_id, "u": user_id, "name": name,
         "prefix": key[:_SHOWN_CHARACTERS], "hash": key_hash(key)})).one()
    return NewApiKey(**_key_view(row).model_dump(), key=key)


_KEY_COLUMNS = "key_id, name, prefix, user_id, created_at, last_used_at, revoked_at"


async def list_keys(conn: AsyncConnection, workspace_id: uuid.UUID, limit: int,
                    cursor: str | None) -> tuple[list[ApiKeyView], str | None]:
    after = _after(cursor)
    rows = (await conn.execute(text(
        f"SELECT {_KEY_COLUMNS} FROM gateway.api_keys WHERE workspace_id = :w"
        + (" AND (created_at, key_id) > (:t, :id)" if after else "")
        + " ORDER BY created_at, key_id LIMIT :n"),
        {"w": workspace_id, "n": limit + 1, **after})).all()
    rows, next_cursor = page_of(rows, limit, lambda r: moment_and_id(r.created_at, r.key_id))
    return [_key_view(r) for r in rows], next_cursor


async def key_in(conn: AsyncConnection, workspace_id: uuid.UUID,
                 key_id: uuid.UUID) -> ApiKeyView | None:
    """One key of the workspace (None: no such key here)."""
    row = (await conn.execute(text(
        f"SELECT {_KEY_COLUMNS} FROM gateway.api_keys WHERE key_id = :k AND workspace_id = :w"),
        {"k": key_id, "w": workspace_id})).first()
    return _key_view(row) if row is not None else None


async def revoke_key(conn: AsyncConnection, workspace_id: uuid.UUID,
                     key_id: uuid.UUID) -> ApiKeyView | None:
    """Revoked from now on (revoking twice keeps the first moment); None: no such key here."""
    row = (await conn.execute(text(
        "UPDATE gateway.api_keys SET revoked_at = coalesce(revoked_at, now())"
        f" WHERE key_id = :k AND workspace_id = :w RETURNING {_KEY_COLUMNS}"),
        {"k": key_id, "w": workspace_id})).first()
    return _key_view(row) if row is not None else None


def _key_view(row) -> ApiKeyView:
    return ApiKeyView(**{name: getattr(row, name) for name in ApiKeyView.model_fields})


def _after(cursor: str | None) -> dict:
    if cursor is None:
        return {}
    moment, key = decode_moment_and_id(cursor)
    return {"t": moment, "id": key}
