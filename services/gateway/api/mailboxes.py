"""Mailboxes: the workspace's sender mailboxes (connect, change, disconnect, test connection)
and the health of every mailbox the thread-watcher reads."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from contracts import commands as c
from contracts.views import (
    ConnectionCheck,
    ConnectionTestView,
    Created,
    MailboxDeliverabilityView,
    MailboxHealthView,
    MailboxView,
)
from services.gateway.api.deps import KEY_REQUIRED, Caller, ask

router = APIRouter(prefix="/v1/mailboxes", tags=["mailboxes"], dependencies=KEY_REQUIRED)


@router.get("/health", response_model=list[MailboxHealthView])
async def mailbox_health(request: Request):
    """The sender mailboxes the thread-watcher reads for replies and bounces: whether each can
    be read, by IDLE or by polling, its last error and when a failing one is tried again.
    Only the mailboxes this workspace's sequences send from."""
    senders = await ask(request, c.ListSenderAddresses)
    return await ask(request, c.GetMailboxHealth, addresses=senders)


@router.get("/deliverability", response_model=list[MailboxDeliverabilityView])
async def mailbox_deliverability(request: Request):
    """Per sender address of this workspace's sequences: sender-side rejections (failed
    SPF/DKIM/DMARC, a blocked sender, ...) in the last window (`alert` when there were some),
    and whether its sends are paused after `pause_after` of them, and why."""
    senders = await ask(request, c.ListSenderAddresses)
    return await ask(request, c.GetMailboxDeliverability, addresses=senders)


@router.post("/{address}/resume", response_model=MailboxDeliverabilityView)
async def resume_mailbox(request: Request, caller: Caller,
                         address: Annotated[str, Path(max_length=254)]):
    """Let a paused sender mailbox send again (its deferred steps go out when next tried).
    Earlier rejections no longer count towards the next pause."""
    return await ask(request, c.ResumeMailbox, address=address, by=caller.user_email)


@router.post("", status_code=201, response_model=Created)
async def connect_mailbox(body: c.MailboxRequest, request: Request):
    """A sender mailbox of the workspace: SMTP to send, IMAP to read replies and bounces, with
    passwords (kept encrypted, never shown again) or OAuth2 (then connect it with the consent
    flow). Sequences name it in `mailbox_pool`."""
    return await ask(request, c.ConnectMailbox, **body.model_dump())


@router.get("", response_model=list[MailboxView])
async def list_mailboxes(request: Request):
    """Every mailbox of the workspace, its health and today's sends against its limits."""
    return await ask(request, c.ListMailboxes)


@router.get("/{mailbox_id}", response_model=MailboxView)
async def get_mailbox(mailbox_id: uuid.UUID, request: Request):
    return await ask(request, c.GetMailbox, mailbox_id=mailbox_id)


@router.put("/{mailbox_id}", response_model=Created)
async def change_mailbox(mailbox_id: uuid.UUID, body: c.MailboxRequest, request: Request):
    """Every setting as given; a password left out keeps the stored one."""
    return await ask(request, c.ChangeMailbox, mailbox_id=mailbox_id, **body.model_dump())


@router.delete("/{mailbox_id}", status_code=204)
async def disconnect_mailbox(mailbox_id: uuid.UUID, request: Request):
    """The mailbox and its secrets are deleted; emails of sequences naming it wait."""
    await ask(request, c.DisconnectMailbox, mailbox_id=mailbox_id)
    return Response(status_code=204)


@router.post("/{mailbox_id}/test", response_model=ConnectionTestView)
async def test_connection(mailbox_id: uuid.UUID, request: Request):
    """Log in to the SMTP and the IMAP server now: each says `ok`, or the exact failure
    ("535 5.7.8 Authentication credentials invalid", a certificate for another host)."""
    return await test_mailbox(request, mailbox_id, ask)


async def test_mailbox(request: Request, mailbox_id: uuid.UUID, asker) -> ConnectionTestView:
    """Both halves at once (the mailer logs in to SMTP, the thread-watcher to IMAP); shared
    with the web app's button. `asker` is the API's or the web app's `ask`."""
    mailbox = MailboxView.model_validate(await asker(request, c.GetMailbox,
                                                     mailbox_id=mailbox_id))
    smtp = asker(request, c.TestMailboxSmtp, mailbox_id=mailbox_id)
    if mailbox.imap is None:
        return ConnectionTestView(smtp=ConnectionCheck.model_validate(await smtp), imap=None)
    smtp_check, imap_check = await asyncio.gather(
        smtp, asker(request, c.TestMailboxImap, mailbox_id=mailbox_id))
    return ConnectionTestView(smtp=ConnectionCheck.model_validate(smtp_check),
                              imap=ConnectionCheck.model_validate(imap_check))
