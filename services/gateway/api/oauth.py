"""OAuth2 mailboxes: the workspace's own OAuth clients (Google, Microsoft) and the consent flow
through the gateway. The provider sends the browser back to `/oauth/callback` with a code and
the `state` this gateway signed (it names the workspace and the consent), so the callback needs
no API key and nobody can finish another workspace's consent."""

from __future__ import annotations

import uuid
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import RedirectResponse

from contracts import commands as c
from contracts.values import OAuthProvider
from contracts.views import ConsentStartView, OAuthClientView
from sequences.signing import BadToken
from services.gateway import bus
from services.gateway.api.deps import KEY_REQUIRED, ask, workspace_of
from services.gateway.bus import problem

# the provider's redirect back: no API key, the signed `state` says whose consent it is
router = APIRouter(tags=["mailboxes", "signed redirects"])
keyed = APIRouter(prefix="/v1/mailboxes", tags=["mailboxes"], dependencies=KEY_REQUIRED)

CALLBACK_PATH = "/oauth/callback"
_PURPOSE = "oauth-consent"


@keyed.get("/oauth-clients", response_model=list[OAuthClientView])
async def list_oauth_clients(request: Request):
    """The workspace's OAuth clients (never their secrets: `has_secret` says whether one is
    stored)."""
    return await ask(request, c.ListOAuthClients)


@keyed.put("/oauth-clients/{provider}", response_model=OAuthClientView)
async def set_oauth_client(provider: Annotated[OAuthProvider, Path()], body: c.OAuthClientRequest,
                           request: Request):
    """The workspace's own OAuth client at the provider (registered in its Google Cloud or
    Microsoft Entra console, redirect URI `<PUBLIC_URL>/oauth/callback`). Endpoints and scopes
    default to the provider's; a secret left out keeps the stored one."""
    return await ask(request, c.SetOAuthClient, provider=provider, **body.model_dump())


@keyed.post("/{mailbox_id}/oauth/start", response_model=ConsentStartView)
async def start_consent(mailbox_id: uuid.UUID, request: Request):
    """Where the mailbox's owner gives consent: open `authorize_url` in a browser; the provider
    comes back to the gateway, which stores the tokens (encrypted)."""
    return await consent_for(request, workspace_of(request), mailbox_id, ask)


async def consent_for(request: Request, workspace_id: uuid.UUID, mailbox_id: uuid.UUID,
                      asker) -> ConsentStartView:
    """Shared with the web app's "Connect" button; `asker` is the API's or the app's `ask`."""
    consent_id = uuid.uuid4()
    state = request.app.state.signer.sign(_PURPOSE, {"ws": str(workspace_id),
                                                     "consent": str(consent_id)})
    redirect_uri = request.app.state.public_url.rstrip("/") + CALLBACK_PATH
    return ConsentStartView.model_validate(await asker(
        request, c.StartMailboxConsent, mailbox_id=mailbox_id, redirect_uri=redirect_uri,
        consent_id=consent_id, state=state))


@router.get(CALLBACK_PATH, include_in_schema=True, status_code=303)
async def consent_callback(request: Request,
                           state: Annotated[str, Query(max_length=1000)] = "",
                           code: Annotated[str | None, Query(max_length=4000)] = None,
                           error: Annotated[str | None, Query(max_length=200)] = None):
    """The provider's redirect after consent: the code is exchanged for tokens and the browser
    goes on to Settings › Mailboxes."""
    try:
        signed = request.app.state.signer.verify(_PURPOSE, state)
        workspace_id, consent_id = uuid.UUID(signed["ws"]), uuid.UUID(signed["consent"])
    except (BadToken, KeyError, ValueError):
        raise problem(400, "state", "not a consent this gateway started") from None
    if error or not code:
        if "text/html" in request.headers.get("accept", ""):
            # a person who pressed "Deny" at the provider: back to the mailboxes, told why
            return RedirectResponse("/settings/mailboxes?" + urlencode(
                {"consent_refused": error or "no code"}), status_code=303)
        raise problem(400, "error", f"the provider did not give consent: {error or 'no code'}")
    finished = await bus.ask(request.app.state.nc, workspace_id, c.FinishMailboxConsent,
                             consent_id=consent_id, code=code)
    return RedirectResponse(f"/settings/mailboxes?connected={finished['id']}", status_code=303)


router.include_router(keyed)
