"""OAuth2 for mailboxes (Google, Microsoft): each workspace registers its own OAuth client (so no
central app verification is needed), a mailbox is connected through the consent flow
(authorization code with PKCE) and sends and reads with an access token refreshed from its
refresh token. Used by the mailer (consent, SMTP) and the thread-watcher (IMAP).

The client is authlib's (`AsyncOAuth2Client`, over httpx): it builds the authorization URL with
the S256 code challenge, and speaks to the token endpoint (code exchange, refresh) with the
client's credentials, so no OAuth message is put together here by hand.

A provider is configuration: its authorize and token endpoints and scopes (the defaults below,
or the workspace's own; tests point them at a local server). Tokens and the client secret are
sealed like every other secret (sequences/encryption.py).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
from authlib.common.errors import AuthlibBaseError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sequences import mailboxes
from sequences.encryption import SecretBox
from sequences.mailboxes import ConnectedMailbox

if TYPE_CHECKING:
    from authlib.integrations.httpx_client import AsyncOAuth2Client


@dataclass(frozen=True)
class Provider:
    authorize_url: str
    token_url: str
    scopes: tuple[str, ...]
    # what makes the provider hand out a refresh token (and again on a second consent)
    authorize_params: dict = field(default_factory=dict)


PROVIDERS = {
    "google": Provider("https://accounts.google.com/o/oauth2/v2/auth",
                       "https://oauth2.googleapis.com/token", ("https://mail.google.com/",),
                       {"access_type": "offline", "prompt": "consent"}),
    "microsoft": Provider("https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
                          "https://login.microsoftonline.com/common/oauth2/v2.0/token",
                          ("offline_access", "https://outlook.office.com/SMTP.Send",
                           "https://outlook.office.com/IMAP.AccessAsUser.All"),
                          {"prompt": "consent"}),
}

# an access token this close to its expiry is refreshed before use (a send or a login takes a
# few seconds; a clock a little off should not make the server refuse it)
REFRESH_AHEAD_SECONDS = 300
_TIMEOUT = 15.0


class OAuthFailure(Exception):
    """The mailbox cannot get an access token: its text says why (never a secret)."""


class TokenRevoked(OAuthFailure):
    """The token endpoint refused the refresh token (invalid_grant: revoked, expired, or the
    password changed): only a new consent helps."""


@dataclass(frozen=True)
class OAuthClient:
    workspace_id: uuid.UUID
    provider: str
    client_id: str
    authorize_url: str
    token_url: str
    scopes: tuple[str, ...]
    client_secret: str | None = field(default=None, repr=False)

    def session(self, redirect_uri: str | None = None) -> AsyncOAuth2Client:
        # imported at first use: it brings joserfc (5 MB resident) into every mailer and
        # thread-watcher, most of which never meet an OAuth mailbox (issue 18's 150 MB)
        from authlib.deprecate import AuthlibDeprecationWarning
        # authlib 1.9 warns that it fell back to httpx (it would rather have httpx2, which
        # nothing else here uses): the fallback is what we chose
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AuthlibDeprecationWarning)
            from authlib.integrations.httpx_client import AsyncOAuth2Client
        return AsyncOAuth2Client(self.client_id, self.client_secret, scope=" ".join(self.scopes),
                                 redirect_uri=redirect_uri, code_challenge_method="S256",
                                 timeout=_TIMEOUT)

    def authorization_url(self, redirect_uri: str, state: str, verifier: str) -> str:
        extra = PROVIDERS[self.provider].authorize_params if self.provider in PROVIDERS else {}
        url, _ = self.session(redirect_uri).create_authorization_url(
            self.authorize_url, state=state, code_verifier=verifier, **extra)
        return url

    async def exchange(self, code: str, redirect_uri: str, verifier: str) -> dict:
        """The tokens for an authorization code (with the PKCE verifier)."""
        async with self.session(redirect_uri) as session:
            token = await _token_call(session.fetch_token(
                self.token_url, grant_type="authorization_code", code=code,
                code_verifier=verifier))
        if not token.get("refresh_token"):
            raise OAuthFailure("OAuth: the provider gave no refresh token (was offline access"
                               " asked for?)")
        return token

    async def refresh(self, refresh_token: str) -> dict:
        async with self.session() as session:
            return await _token_call(session.refresh_token(self.token_url,
                                                           refresh_token=refresh_token))


async def _token_call(call) -> dict:
    """One request to the token endpoint; its failure as the words a person can act on."""
    try:
        token = dict(await call)
    except AuthlibBaseError as error:  # the endpoint's own OAuth error answer
        words = f"{error.error}" + (f": {error.description}" if error.description else "")
        if error.error == "invalid_grant":
            raise TokenRevoked(f"OAuth: the provider refused the refresh token ({words});"
                               " connect the mailbox again") from None
        raise OAuthFailure(f"OAuth: the token endpoint refused ({words})") from None
    except httpx.HTTPError as error:
        raise OAuthFailure(f"OAuth: the token endpoint cannot be reached: {error}") from None
    except ValueError:  # not JSON at all
        raise OAuthFailure("OAuth: the token endpoint answered something that is not a token"
                           " (not JSON)") from None
    if not isinstance(token.get("access_token"), str) or not token["access_token"]:
        raise OAuthFailure("OAuth: the token endpoint answered without an access_token")
    return token


def stored_tokens(token: dict, kept_refresh_token: str | None = None) -> dict:
    """What is kept of a token answer (sealed with the mailbox's other secrets). `expires_at`
    is on the wall clock, not the system's movable clock: it is the provider's deadline."""
    expires_in = token.get("expires_in")
    expires_at = token.get("expires_at") or (time.time() + float(expires_in)
                                             if expires_in else time.time() + 3600)
    return {"access_token": token["access_token"],
            "refresh_token": token.get("refresh_token") or kept_refresh_token,
            "expires_at": str(float(expires_at))}


# --- the workspace's OAuth clients (mailer.oauth_clients) ------------------------------------

_CLIENT = text("SELECT workspace_id, provider, client_id, authorize_url, token_url, scopes,"
               " secrets FROM mailer.oauth_clients WHERE workspace_id = :ws"
               " AND (CAST(:provider AS text) IS NULL OR provider = :provider) ORDER BY provider")


async def load_clients(conn: AsyncConnection, box: SecretBox, workspace_id: uuid.UUID,
                       provider: str | None = None) -> list[OAuthClient]:
    rows = await conn.execute(_CLIENT, {"ws": workspace_id, "provider": provider})
    return [OAuthClient(row.workspace_id, row.provider, row.client_id, row.authorize_url,
                        row.token_url, tuple(json.loads(row.scopes)),
                        box.open(row.secrets).get("client_secret")) for row in rows]


# --- access tokens of connected mailboxes ----------------------------------------------------


class AccessTokens:
    """A mailbox's current access token, refreshed when it is near its expiry (or when a server
    refused it), the new one stored. One refresh at a time per mailbox in this process: the
    sends of a batch share it."""

    def __init__(self, engine: AsyncEngine, box: SecretBox):
        self._engine = engine
        self._box = box
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}
        self._fresh: dict[uuid.UUID, tuple[str, float]] = {}  # mailbox -> (token, expires_at)

    async def token(self, mailbox: ConnectedMailbox, refused: str | None = None) -> str:
        """An access token for the mailbox. `refused`: the token a server just refused (it
        expired early, or was revoked): a new one is fetched unless another send did already."""
        lock = self._locks.setdefault(mailbox.mailbox_id, asyncio.Lock())
        async with lock:
            token, expires_at = self._fresh.get(mailbox.mailbox_id) or (
                mailbox.secrets.get("access_token"),
                float(mailbox.secrets.get("expires_at") or 0))
            if token and token != refused and expires_at - time.time() > REFRESH_AHEAD_SECONDS:
                return token
            token, expires_at = await self._refresh(mailbox)
            self._fresh[mailbox.mailbox_id] = (token, expires_at)
            return token

    async def _refresh(self, mailbox: ConnectedMailbox) -> tuple[str, float]:
        refresh_token = mailbox.secrets.get("refresh_token")
        if not refresh_token:
            raise OAuthFailure("OAuth: the mailbox is not connected yet (no consent given):"
                               " use Connect in Settings › Mailboxes")
        async with self._engine.connect() as conn:
            found = await load_clients(conn, self._box, mailbox.workspace_id,
                                       mailbox.oauth_provider)
        if not found:
            raise OAuthFailure(f"OAuth: the workspace has no {mailbox.oauth_provider} OAuth"
                               " client (Settings › Mailboxes)")
        stored = stored_tokens(await found[0].refresh(refresh_token), refresh_token)
        async with self._engine.begin() as conn:
            # read again: other secrets may have changed since `mailbox` was read
            current = await mailboxes.load(conn, self._box, "mailbox_id = :id",
                                           {"id": mailbox.mailbox_id})
            if current:
                await mailboxes.save_secrets(conn, self._box, mailbox.mailbox_id,
                                             {**current[0].secrets, **stored})
        return stored["access_token"], float(stored["expires_at"])
