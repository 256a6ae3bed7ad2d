"""People signing in to the web app: passwords, sessions, invites and the sign-in rate limit.

* Passwords are hashed with Argon2id at OWASP's recommended minimum (19 MiB, 2 passes, 1 lane)
  rather than argon2-cffi's defaults (RFC 9106's 64 MiB profile): each hash in progress holds
  its memory, and at 64 MiB one sign-in took the gateway from 113 to 185 MB (its budget is
  150). Hashing runs in a thread so a sign-in does not stall the event loop, at most
  `_HASHING_AT_ONCE` at a time so a burst of sign-ins cannot exhaust memory; a hash made with
  other parameters is remade at the next successful sign-in. A password is never logged or
  stored as it is.
* A session is a random cookie value (256 bits); only its SHA-256 is stored, with the session's
  CSRF token. It ends after `IDLE` without a request, after `LIFETIME` in any case, and at
  sign-out. Session times are PostgreSQL's `now()`, not the adjustable clock: moving the dev
  clock by days does not sign anybody out.
* An invite is a link with a random token (only its SHA-256 stored), valid `INVITE_VALID`; the
  invitee chooses a password, which makes the user and signs them in.
* Failed sign-ins are counted per address and per client address over `FAILURE_WINDOW`, in
  PostgreSQL so every gateway replica sees the same counts.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import secrets
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.gateway import accounts

IDLE = timedelta(hours=12)
LIFETIME = timedelta(days=7)
INVITE_VALID = timedelta(days=7)
FAILURE_WINDOW = timedelta(minutes=15)
MAX_FAILURES = {"email": 5, "client": 20}  # within FAILURE_WINDOW
MIN_PASSWORD = 10
MAX_PASSWORD = 200

# OWASP Password Storage Cheat Sheet: "Argon2id with a minimum configuration of 19 MiB of
# memory, an iteration count of 2, and 1 degree of parallelism"
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
_HASHING_AT_ONCE = 2
_hashing = threading.BoundedSemaphore(_HASHING_AT_ONCE)  # (taken in the worker thread: no loop)


@functools.cache
def _dummy_hash() -> str:
    """Verified when an address is unknown, so a sign-in takes as long either way. Made on the
    first sign-in, not at import: every start of the gateway would pay for it."""
    return _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class SignedInUser:
    """Who is using the app, as their session says."""

    user_id: uuid.UUID
    workspace_id: uuid.UUID
    workspace_name: str
    email: str
    name: str
    role: str
    language: str | None  # their setting; None: the browser's Accept-Language decides
    timezone: str
    csrf_token: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _gated(work, *args):
    with _hashing:
        return work(*args)


async def _in_thread(work, *args):
    return await asyncio.to_thread(_gated, work, *args)


async def hash_password(password: str) -> str:
    return await _in_thread(_hasher.hash, password)


async def _verifies(password_hash: str | None, password: str) -> bool:
    try:
        return await _in_thread(_hasher.verify, password_hash or _dummy_hash(), password) \
            and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


async def _rehash_if_outdated(engine: AsyncEngine, user_id: uuid.UUID, password_hash: str,
                              password: str) -> None:
    """A hash made with other parameters (an earlier release's) is remade with today's."""
    if _hasher.check_needs_rehash(password_hash):
        async with engine.begin() as conn:
            await conn.execute(text(
                "UPDATE gateway.users SET password_hash = :new"
                " WHERE user_id = :u AND password_hash = :old"),
                {"new": await hash_password(password), "u": user_id, "old": password_hash})


def password_problem(password: str) -> str | None:
    """Why a new password is refused (None: fine). Length is what matters (NIST SP 800-63B)."""
    if len(password) < MIN_PASSWORD:
        return "too_short"
    if len(password) > MAX_PASSWORD:
        return "too_long"
    return None


# --- the rate limit ----------------------------------------------------------------------------


async def too_many_failures(conn: AsyncConnection, email: str, client: str) -> bool:
    rows = (await conn.execute(text(
        "SELECT scope, count(*) AS n FROM gateway.sign_in_failures"
        " WHERE ((scope = 'email' AND key = :email) OR (scope = 'client' AND key = :client))"
        "   AND at > now() - make_interval(secs => :window) GROUP BY scope"),
        {"email": email.lower(), "client": client,
         "window": FAILURE_WINDOW.total_seconds()})).all()
    return any(row.n >= MAX_FAILURES[row.scope] for row in rows)


async def _record_failure(conn: AsyncConnection, email: str, client: str) -> None:
    await conn.execute(text(
        "INSERT INTO gateway.sign_in_failures (scope, key) VALUES ('email', :email),"
        " ('client', :client)"), {"email": email.lower(), "client": client})
    # keep the table small: what is out of every window counts for nothing
    await conn.execute(text(
        "DELETE FROM gateway.sign_in_failures WHERE at < now() - make_interval(secs => :w)"),
        {"w": FAILURE_WINDOW.total_seconds()})


# --- signing in and out ------------------------------------------------------------------------


class RateLimited(Exception):
    pass


async def sign_in(engine: AsyncEngine, email: str, password: str, client: str) -> str | None:
    """A new session's cookie value, or None when the address and password do not match.
    An address in several workspaces signs in to the first whose password matches."""
    async with engine.begin() as conn:
        if await too_many_failures(conn, email, client):
            raise RateLimited(email)
        users = (await conn.execute(text(
            "SELECT user_id, password_hash FROM gateway.users"
            " WHERE lower(email) = lower(:email) ORDER BY created_at, user_id"),
            {"email": email})).all()
    for user in users or [None]:
        if await _verifies(user.password_hash if user else None, password):
            await _rehash_if_outdated(engine, user.user_id, user.password_hash, password)
            return await start_session(engine, user.user_id)
    async with engine.begin() as conn:
        await _record_failure(conn, email, client)
    return None


async def start_session(engine: AsyncEngine, user_id: uuid.UUID) -> str:
    token = secrets.token_urlsafe(32)
    async with engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO gateway.sessions (session_hash, user_id, csrf_token, expires_at)"
            " VALUES (:h, :u, :csrf, now() + make_interval(secs => :life))"),
            {"h": _digest(token), "u": user_id, "csrf": secrets.token_urlsafe(32),
             "life": LIFETIME.total_seconds()})
    return token


# The session, its user and workspace in one round trip; `last_seen_at` is written at most once
# a minute, so a page with polling tables does not turn every request into a write.
_SESSION = text("""
    WITH found AS (
        SELECT s.session_hash, s.csrf_token, u.user_id, u.workspace_id, w.name AS workspace_name,
               u.email, u.name, u.role, u.language, u.timezone
        FROM gateway.sessions s JOIN gateway.users u USING (user_id)
             JOIN gateway.workspaces w USING (workspace_id)
        WHERE s.session_hash = :h AND s.expires_at > now()
          AND s.last_seen_at > now() - make_interval(secs => :idle)
    ), touched AS (
        UPDATE gateway.sessions SET last_seen_at = now()
        WHERE session_hash = (SELECT session_hash FROM found)
          AND last_seen_at < now() - interval '1 minute'
    )
    SELECT * FROM found
""")


async def user_of_session(engine: AsyncEngine, token: str | None) -> SignedInUser | None:
    if not token or len(token) > 100:
        return None
    # one statement in autocommit: one round trip, where a transaction (BEGIN, it, COMMIT) was
    # three, on every page and every poll of a table
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        row = (await conn.execute(_SESSION, {"h": _digest(token),
                                             "idle": IDLE.total_seconds()})).first()
    if row is None:
        return None
    return SignedInUser(**{k: v for k, v in row._mapping.items() if k != "session_hash"})


async def sign_out(engine: AsyncEngine, token: str | None) -> None:
    if token:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM gateway.sessions WHERE session_hash = :h"),
                               {"h": _digest(token)})


async def set_password(conn: AsyncConnection, user_id: uuid.UUID, password: str) -> None:
    """A new password ends every session of the user (a stolen one too)."""
    await conn.execute(text("UPDATE gateway.users SET password_hash = :p WHERE user_id = :u"),
                       {"p": await hash_password(password), "u": user_id})
    await conn.execute(text("DELETE FROM gateway.sessions WHERE user_id = :u"), {"u": user_id})


async def set_preferences(engine: AsyncEngine, user_id: uuid.UUID, **changes) -> None:
    """`language` ('en', 'ko' or None for the browser's), `timezone` (an IANA name) and/or
    `name` (how tasks find the user: the owner name on contacts)."""
    assignments = ", ".join(f"{column} = :{column}" for column in changes
                            if column in ("language", "timezone", "name"))
    if assignments:
        async with engine.begin() as conn:
            await conn.execute(text(f"UPDATE gateway.users SET {assignments} WHERE user_id = :u"),
                               {**changes, "u": user_id})


async def check_password(engine: AsyncEngine, user: SignedInUser, password: str,
                         client: str) -> bool:
    """Whether `password` is the signed-in user's (asked before a new one is set). A wrong one
    counts as a failed sign-in, so the profile is no way around the rate limit."""
    async with engine.begin() as conn:
        if await too_many_failures(conn, user.email, client):
            raise RateLimited(user.email)
        stored = (await conn.execute(text(
            "SELECT password_hash FROM gateway.users WHERE user_id = :u"),
            {"u": user.user_id})).scalar_one_or_none()
    if await _verifies(stored, password):
        return True
    async with engine.begin() as conn:
        await _record_failure(conn, user.email, client)
    return False


async def change_password(engine: AsyncEngine, user_id: uuid.UUID, password: str) -> str:
    """A new password: every session of the user ends (`set_password`), and this new one's
    cookie value is returned, so whoever changed it stays signed in here."""
    async with engine.begin() as conn:
        await set_password(conn, user_id, password)
    return await start_session(engine, user_id)


async def workspace_users(conn: AsyncConnection, workspace_id: uuid.UUID) -> list:
    """The workspace's users with their roles (for the settings page), first added first."""
    return (await conn.execute(text(
        "SELECT user_id, email, name, role, created_at, password_hash IS NOT NULL AS can_sign_in"
        " FROM gateway.users WHERE workspace_id = :w ORDER BY created_at, user_id LIMIT 500"),
        {"w": workspace_id})).all()


# --- invites -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Invite:
    email: str
    name: str
    role: str
    workspace_id: uuid.UUID
    workspace_name: str
    created_at: object
    expires_at: object
    accepted_at: object


async def invite(conn: AsyncConnection, invited_by: SignedInUser, email: str, name: str,
                 role: str) -> str:
    """The token of the invite link for `email` (refused if the workspace has that user)."""
    if await _has_user(conn, invited_by.workspace_id, email):
        raise accounts.EmailTaken(email)
    token = secrets.token_urlsafe(32)
    await conn.execute(text(
        "INSERT INTO gateway.invites (invite_hash, workspace_id, email, name, role, invited_by,"
        " expires_at) VALUES (:h, :w, :email, :name, :role, :by,"
        " now() + make_interval(secs => :valid))"),
        {"h": _digest(token), "w": invited_by.workspace_id, "email": email, "name": name,
         "role": role, "by": invited_by.user_id, "valid": INVITE_VALID.total_seconds()})
    return token


async def _has_user(conn: AsyncConnection, workspace_id: uuid.UUID, email: str) -> bool:
    return (await conn.execute(text(
        "SELECT 1 FROM gateway.users WHERE workspace_id = :w AND lower(email) = lower(:e)"),
        {"w": workspace_id, "e": email})).first() is not None


async def open_invite(conn: AsyncConnection, token: str) -> Invite | None:
    """The invite of a link that is still good (not used, not expired), else None."""
    if not token or len(token) > 100:
        return None
    row = (await conn.execute(text(
        "SELECT i.email, i.name, i.role, i.workspace_id, w.name AS workspace_name, i.created_at,"
        " i.expires_at, i.accepted_at FROM gateway.invites i JOIN gateway.workspaces w"
        " USING (workspace_id) WHERE invite_hash = :h AND accepted_at IS NULL"
        " AND expires_at > now() FOR UPDATE OF i"), {"h": _digest(token)})).first()
    return Invite(**row._mapping) if row else None


async def accept_invite(engine: AsyncEngine, token: str, password: str) -> str | None:
    """Make the invited user with this password; a session's cookie value, or None when the
    link is used, expired or unknown."""
    async with engine.begin() as conn:
        found = await open_invite(conn, token)
        if found is None:
            return None
        try:
            user = await accounts.add_user(conn, found.workspace_id, found.email, found.name)
        except accounts.EmailTaken:
            return None
        await conn.execute(text("UPDATE gateway.users SET role = :r WHERE user_id = :u"),
                           {"r": found.role, "u": user.user_id})
        await set_password(conn, user.user_id, password)
        await conn.execute(text("UPDATE gateway.invites SET accepted_at = now()"
                                " WHERE invite_hash = :h"), {"h": _digest(token)})
    return await start_session(engine, user.user_id)


async def pending_invites(conn: AsyncConnection, workspace_id: uuid.UUID) -> list:
    return (await conn.execute(text(
        "SELECT email, name, role, created_at, expires_at FROM gateway.invites"
        " WHERE workspace_id = :w AND accepted_at IS NULL AND expires_at > now()"
        " ORDER BY created_at DESC LIMIT 100"), {"w": workspace_id})).all()
