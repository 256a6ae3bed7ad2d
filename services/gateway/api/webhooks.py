"""Webhooks: register, list, delete, the delivery log and redelivery."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, Request, Response

from contracts import commands as c
from contracts.views import (
    NewWebhook,
    WebhookDeliveryPage,
    WebhookDeliveryView,
    WebhookPage,
    WebhookView,
)
from services.gateway.api.deps import KEY_REQUIRED, Cursor, Limit, ask

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], dependencies=KEY_REQUIRED)


@router.post("", status_code=201, response_model=NewWebhook)
async def register_webhook(body: c.WebhookRequest, request: Request):
    """Deliver this workspace's events of these types (or `*`) to an HTTPS URL: signed with
    the `secret` in this answer (shown once), retried with backoff, in order per enrollment."""
    created = await ask(request, c.RegisterWebhook, **body.model_dump())
    request.state.one_time_fields = ("secret",)  # not kept for idempotent repeats
    return created


@router.get("", response_model=WebhookPage)
async def list_webhooks(request: Request, limit: Limit = 50, cursor: Cursor = None):
    return await ask(request, c.ListWebhooks, page=c.Page(limit=limit, cursor=cursor))


@router.get("/{webhook_id}", response_model=WebhookView)
async def get_webhook(webhook_id: uuid.UUID, request: Request):
    return await ask(request, c.GetWebhook, webhook_id=webhook_id)


@router.delete("/{webhook_id}", status_code=204)
async def delete_webhook(webhook_id: uuid.UUID, request: Request):
    """No more deliveries (pending ones are given up); the delivery log stays readable."""
    await ask(request, c.DeleteWebhook, webhook_id=webhook_id)
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=WebhookDeliveryPage)
async def list_webhook_deliveries(webhook_id: uuid.UUID, request: Request,
                                  state: Literal["pending", "delivered", "failed"] | None = None,
                                  limit: Limit = 50, cursor: Cursor = None):
    """The delivery log, newest first: attempts, the receiver's last answer, what is next."""
    return await ask(request, c.ListWebhookDeliveries, webhook_id=webhook_id, state=state,
                     page=c.Page(limit=limit, cursor=cursor))


@router.post("/{webhook_id}/deliveries/{delivery_id}/redeliver",
             response_model=WebhookDeliveryView)
async def redeliver(webhook_id: uuid.UUID, delivery_id: uuid.UUID, request: Request):
    """Deliver that event again, now (its attempts start over)."""
    return await ask(request, c.RedeliverWebhook, webhook_id=webhook_id,
                     delivery_id=delivery_id)
