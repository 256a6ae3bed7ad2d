"""Mailboxes: the health of the sender mailboxes the thread-watcher reads."""

from __future__ import annotations

from fastapi import APIRouter, Request

from contracts import commands as c
from contracts.views import MailboxHealthView
from services.gateway.api.deps import KEY_REQUIRED, ask

router = APIRouter(prefix="/v1/mailboxes", tags=["mailboxes"], dependencies=KEY_REQUIRED)


@router.get("/health", response_model=list[MailboxHealthView])
async def mailbox_health(request: Request):
    """The sender mailboxes the thread-watcher reads for replies and bounces: whether each can
    be read, by IDLE or by polling, its last error and when a failing one is tried again.
    Only the mailboxes this workspace's sequences send from."""
    senders = await ask(request, c.ListSenderAddresses)
    return await ask(request, c.GetMailboxHealth, addresses=senders)
