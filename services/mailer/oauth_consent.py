"""The workspace's OAuth clients and the consent flow of an OAuth2 mailbox, served to the
gateway: set and list the clients (secrets sealed, never shown), start a consent (the
authorization URL with a PKCE challenge; the verifier kept sealed until the provider calls
back) and finish it (the code exchanged for tokens, kept with the mailbox's secrets)."""

from __future__ import annotations

import json
import secrets as random_secrets
from datetime import timedelta

from sqlalchemy import text

from contracts.commands import (
    FinishMailboxConsent,
    ListOAuthClients,
    SetOAuthClient,
    StartMailboxConsent,
)
from contracts.views import ConsentStartView, Created, OAuthClientView
from sequences import mailboxes
from sequences.bootstrap import Runtime
from sequences.encryption import NoKeys, SecretBox
from sequences.messaging.rpc import Rejected
from services.mailer.mailboxes import MailboxRegistry
from sequences.oauth import PROVIDERS, OAuthClient, OAuthFailure, load_clients, stored_tokens

_UPSERT = text(
    "INSERT INTO mailer.oauth_clients (workspace_id, provider, client_id, authorize_url,"
    " token_url, scopes, secrets, updated_at) VALUES (:ws, :provider, :client_id, :authorize,"
    " :token, :scopes, :secrets, :now) ON CONFLICT (workspace_id, provider) DO UPDATE SET"
    " client_id = :client_id, authorize_url = :authorize, token_url = :token, scopes = :scopes,"
    " secrets = :secrets, updated_at = :now"
)
_CONSENT = text("SELECT consent_id, mailbox_id, redirect_uri, secrets FROM mailer.oauth_consents"
                " WHERE consent_id = :id AND workspace_id = :ws")
# a consent not finished within this is forgotten (the provider's codes live minutes)
_CONSENT_AGE = timedelta(hours=1)


class OAuthConsents:
    def __init__(self, runtime: Runtime, box: SecretBox, registry: MailboxRegistry):
        self.runtime = runtime
        self.box = box
        self.registry = registry

    async def set_client(self, command: SetOAuthClient) -> OAuthClientView:
        defaults = PROVIDERS[command.provider]
        async with self.runtime.engine.begin() as conn:
            kept = await load_clients(conn, self.box, command.workspace_id, command.provider)
            secret = command.client_secret or (kept[0].client_secret if kept else None)
            await conn.execute(_UPSERT, {
                "ws": command.workspace_id, "provider": command.provider,
                "client_id": command.client_id,
                "authorize": command.authorize_url or defaults.authorize_url,
                "token": command.token_url or defaults.token_url,
                "scopes": json.dumps(command.scopes or list(defaults.scopes)),
                "secrets": self._seal({"client_secret": secret}),
                "now": self.runtime.clock.now()})
            [client] = await load_clients(conn, self.box, command.workspace_id, command.provider)
        return _view(client)

    async def list_clients(self, query: ListOAuthClients) -> list[OAuthClientView]:
        async with self.runtime.engine.connect() as conn:
            return [_view(c) for c in await load_clients(conn, self.box, query.workspace_id)]

    async def start(self, command: StartMailboxConsent) -> ConsentStartView:
        mailbox = await self.registry.mailbox(command.workspace_id, command.mailbox_id)
        if mailbox.auth != "oauth2":
            raise Rejected(409, "this mailbox logs in with a password, not OAuth2", "auth")
        client = await self._client(command.workspace_id, mailbox.oauth_provider)
        verifier = random_secrets.token_urlsafe(48)  # RFC 7636: 43 to 128 characters
        now = self.runtime.clock.now()
        async with self.runtime.engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO mailer.oauth_consents (consent_id, workspace_id, mailbox_id,"
                " redirect_uri, secrets, started_at) VALUES (:id, :ws, :mailbox, :uri, :s, :now)"),
                {"id": command.consent_id, "ws": command.workspace_id,
                 "mailbox": mailbox.mailbox_id, "uri": command.redirect_uri,
                 "s": self._seal({"code_verifier": verifier}), "now": now})
        url = client.authorization_url(command.redirect_uri, command.state, verifier)
        return ConsentStartView(authorize_url=url, consent_id=command.consent_id)

    async def finish(self, command: FinishMailboxConsent) -> Created:
        """The code for tokens. A refusal of the token endpoint is answered (and shown on the
        mailbox); nothing is half-stored."""
        async with self.runtime.engine.begin() as conn:
            row = (await conn.execute(_CONSENT, {"id": command.consent_id,
                                                 "ws": command.workspace_id})).first()
            if row is not None:
                await conn.execute(text("DELETE FROM mailer.oauth_consents WHERE consent_id = :id"
                                        " OR started_at < :old"), {
                    "id": command.consent_id,
                    "old": self.runtime.clock.now() - _CONSENT_AGE})
        if row is None:
            raise Rejected(404, "no such consent under way (used already, or too old):"
                                " connect the mailbox again", "state")
        mailbox = await self.registry.mailbox(command.workspace_id, row.mailbox_id)
        client = await self._client(command.workspace_id, mailbox.oauth_provider)
        verifier = self.box.open(row.secrets)["code_verifier"]
        now = self.runtime.clock.now()
        try:
            token = await client.exchange(command.code, row.redirect_uri, verifier)
        except OAuthFailure as failure:
            async with self.runtime.engine.begin() as conn:
                await mailboxes.mark(conn, mailbox.mailbox_id, False, str(failure), now)
            raise Rejected(502, str(failure), "code") from None
        async with self.runtime.engine.begin() as conn:
            await mailboxes.save_secrets(conn, self.box, mailbox.mailbox_id,
                                         {**mailbox.secrets, **stored_tokens(token)})
            await mailboxes.mark(conn, mailbox.mailbox_id, True, None, now)
        return Created(id=mailbox.mailbox_id)

    async def _client(self, workspace_id, provider: str | None) -> OAuthClient:
        async with self.runtime.engine.connect() as conn:
            found = await load_clients(conn, self.box, workspace_id, provider)
        if not found:
            raise Rejected(409, f"set up the workspace's {provider} OAuth client first"
                                " (client id and secret)", "oauth_provider")
        return found[0]

    def _seal(self, secrets: dict) -> str:
        try:
            return self.box.seal(secrets)
        except NoKeys as error:
            raise Rejected(503, str(error)) from None


def _view(client: OAuthClient) -> OAuthClientView:
    return OAuthClientView(provider=client.provider, client_id=client.client_id,
                           authorize_url=client.authorize_url, token_url=client.token_url,
                           scopes=list(client.scopes), has_secret=bool(client.client_secret))
