"""Settings › Mailboxes: the workspace's sender mailboxes (connect one with its SMTP and IMAP
servers and limits, test its connection, disconnect it) with today's sends against their
limits, and the health of every mailbox the thread-watcher reads. Passwords go in, sealed by
the mailer, and are never shown again (the form never echoes them)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError

from contracts import commands as c
from contracts.views import (
    MailboxDeliverabilityView,
    MailboxHealthView,
    MailboxView,
    OAuthClientView,
)
from services.gateway.api.mailboxes import test_mailbox
from services.gateway.api.oauth import consent_for
from services.gateway.bus import ProblemError
from services.gateway.web.forms import errors_of, nested, validation_errors
from services.gateway.web.pages import ask, page_router
from services.gateway.web.session import Admin, SignedIn
from services.gateway.web.templating import render, texts_for

router = page_router()
_SECRETS = ("smtp.password", "imap.password", "client_secret")
_PROVIDERS = {"google": "Google", "microsoft": "Microsoft"}


async def _page(request: Request, status_code: int = 200, **context):
    senders = await ask(request, c.ListSenderAddresses)
    health = [MailboxHealthView.model_validate(m) for m in
              (await ask(request, c.GetMailboxHealth, addresses=senders) if senders else [])]
    connected = [MailboxView.model_validate(m) for m in await ask(request, c.ListMailboxes)]
    clients = {view.provider: view for view in (
        OAuthClientView.model_validate(m) for m in await ask(request, c.ListOAuthClients))}
    sending = [MailboxDeliverabilityView.model_validate(m) for m in (
        await ask(request, c.GetMailboxDeliverability, addresses=senders) if senders else [])]
    context.setdefault("values", {})
    context.setdefault("errors", {})
    return render(request, "settings/mailboxes.html", status_code=status_code,
                  section="mailboxes", senders=senders, mailboxes=health, connected=connected,
                  sending=sending, oauth_clients=clients, providers=_PROVIDERS, **context)


@router.get("/settings/mailboxes")
async def mailboxes(request: Request, user: SignedIn,
                    connected: Annotated[uuid.UUID | None, Query()] = None,
                    consent_refused: Annotated[str | None, Query(max_length=200)] = None):
    """`connected`: the mailbox whose consent just came back (from /oauth/callback);
    `consent_refused`: the provider's error when the person did not give consent."""
    return await _page(request, consented=connected, consent_refused=consent_refused)


def request_of(typed: dict[str, str]) -> dict:
    """The form's fields as the API's body: empty ones left out (their defaults apply), the
    IMAP part only when it has a host, folders from a comma-separated list, the sign-in
    choice (a password, or Google's or Microsoft's OAuth2) as `auth` and `oauth_provider`."""
    sign_in = typed.pop("sign_in", "password")
    if sign_in in ("google", "microsoft"):
        typed = {**typed, "auth": "oauth2", "oauth_provider": sign_in}
    body = nested((k, v) for k, v in typed.items() if v != "")
    imap = body.get("imap") or {}
    if not imap.get("host"):
        body.pop("imap", None)
    elif "folders" in imap:
        imap["folders"] = [f.strip() for f in imap["folders"].split(",") if f.strip()]
    return body


@router.post("/settings/mailboxes")
async def connect_mailbox(request: Request, user: Admin):
    form = await request.form()
    typed = {str(k): str(v).strip() for k, v in form.items() if k != "csrf_token"}
    shown = {k: v for k, v in typed.items() if k not in _SECRETS}  # never echoed back
    try:
        body = c.MailboxRequest(**request_of(typed))
        created = await ask(request, c.ConnectMailbox, **body.model_dump())
    except ValidationError as error:
        errors = validation_errors(error, texts_for(request).gettext)
        return await _page(request, 422, values=shown, errors=errors)
    except ProblemError as refused:
        if refused.problem.status not in (409, 422, 503):
            raise
        return await _page(request, refused.problem.status, values=shown,
                           errors=errors_of(refused.problem))
    return RedirectResponse(f"/settings/mailboxes?connected={created['id']}", status_code=303)


@router.post("/settings/mailboxes/resume")
async def resume_mailbox(request: Request, user: SignedIn):
    """A paused sender mailbox sends again (someone fixed its SPF/DKIM/DMARC, its reputation,
    ...)."""
    address = str((await request.form()).get("address") or "").strip()
    await ask(request, c.ResumeMailbox, address=address, by=user.email)
    return RedirectResponse("/settings/mailboxes", status_code=303)


@router.post("/settings/mailboxes/{mailbox_id}/test")
async def test_connection(request: Request, user: SignedIn, mailbox_id: uuid.UUID):
    """Log in to its SMTP and IMAP servers now; the page shows each answer."""
    result = await test_mailbox(request, mailbox_id, ask)
    return await _page(request, tested=mailbox_id, result=result)


@router.get("/settings/mailboxes/{mailbox_id}/delete")
async def confirm_disconnect(request: Request, user: Admin, mailbox_id: uuid.UUID):
    mailbox = MailboxView.model_validate(await ask(request, c.GetMailbox, mailbox_id=mailbox_id))
    return render(request, "settings/confirm.html", section="mailboxes", key=None,
                  webhook=None, mailbox=mailbox)


@router.post("/settings/mailboxes/{mailbox_id}/delete")
async def disconnect(request: Request, user: Admin, mailbox_id: uuid.UUID):
    await ask(request, c.DisconnectMailbox, mailbox_id=mailbox_id)
    return RedirectResponse("/settings/mailboxes", status_code=303)




@router.post("/settings/mailboxes/oauth-clients/{provider}")
async def set_oauth_client(request: Request, user: Admin, provider: str):
    """The workspace's own OAuth client at Google or Microsoft (a secret left empty keeps the
    stored one); the endpoints are the provider's unless given."""
    if provider not in _PROVIDERS:
        return await _page(request, 404)
    form = await request.form()
    prefix = f"{provider}."  # the fields of one provider's form: google.client_id, ...
    typed = {str(k).removeprefix(prefix): str(v).strip() for k, v in form.items()
             if str(k).startswith(prefix) and str(v).strip()}
    try:
        body = c.OAuthClientRequest(**typed)
        await ask(request, c.SetOAuthClient, provider=provider, **body.model_dump())
    except ValidationError as error:
        errors = validation_errors(error, texts_for(request).gettext)
        return await _page(request, 422,
                           client_errors={prefix + k: v for k, v in errors.items()},
                           client_values={prefix + k: v for k, v in typed.items()
                                          if k not in _SECRETS})
    return RedirectResponse("/settings/mailboxes#oauth-clients", status_code=303)


@router.post("/settings/mailboxes/{mailbox_id}/oauth")
async def connect_with_provider(request: Request, user: SignedIn, mailbox_id: uuid.UUID):
    """"Connect Google / Microsoft": to the provider's consent page; it comes back to the
    gateway's /oauth/callback, which stores the tokens and returns here."""
    try:
        started = await consent_for(request, user.workspace_id, mailbox_id, ask)
    except ProblemError as refused:
        if refused.problem.status not in (409, 503):
            raise
        return await _page(request, refused.problem.status, consent_error={
            "mailbox": mailbox_id, "text": refused.problem.detail})
    return RedirectResponse(started.authorize_url, status_code=303)
