"""Webhooks: register, list, change, delete, rotate the secret, the delivery log and
redelivery."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, FastAPI, Request, Response

from contracts import commands as c
from contracts.schema import webhooks_openapi
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
    """Deliver this workspace's events of these types (or `*`) to an HTTPS URL, Standard
    Webhooks style: signed with the `secret` in this answer (shown once; `whsec_<base64>`, ours
    unless given), retried with backoff, in order per enrollment. Each event's payload is in
    this document's `webhooks` section."""
    created = await ask(request, c.RegisterWebhook, **body.model_dump())
    request.state.one_time_fields = ("secret",)  # not kept for idempotent repeats
    return created


@router.get("", response_model=WebhookPage)
async def list_webhooks(request: Request, limit: Limit = 50, cursor: Cursor = None):
    return await ask(request, c.ListWebhooks, page=c.Page(limit=limit, cursor=cursor))


@router.get("/{webhook_id}", response_model=WebhookView)
async def get_webhook(webhook_id: uuid.UUID, request: Request):
    return await ask(request, c.GetWebhook, webhook_id=webhook_id)


@router.patch("/{webhook_id}", response_model=WebhookView)
async def change_webhook(webhook_id: uuid.UUID, body: c.WebhookChanges, request: Request):
    """Change its description, or turn the deprecated `Sequences-*` headers on or off."""
    return await ask(request, c.ChangeWebhook, webhook_id=webhook_id,
                     **body.model_dump(exclude_none=True))


@router.post("/{webhook_id}/secret/rotate", response_model=NewWebhook)
async def rotate_secret(webhook_id: uuid.UUID, request: Request,
                        body: c.SecretRotation = c.SecretRotation()):
    """A new signing secret (in this answer, shown once): from now on deliveries carry its
    signature and, until `rotation_ends_at`, the old secret's beside it, so receivers switch
    at their pace. 409 (`secret`) while another rotation runs."""
    rotated = await ask(request, c.RotateWebhookSecret, webhook_id=webhook_id,
                        **body.model_dump(exclude_none=True))
    request.state.one_time_fields = ("secret",)
    return rotated


@router.delete("/{webhook_id}/secret/previous", response_model=WebhookView)
async def end_secret_rotation(webhook_id: uuid.UUID, request: Request):
    """End the rotation's grace period now: only the new secret signs."""
    return await ask(request, c.EndSecretRotation, webhook_id=webhook_id)


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


def document_payloads(app: FastAPI) -> None:
    """The app's OpenAPI document gains the `webhooks` section (OpenAPI 3.1): what a receiver
    gets for each event type, generated from the contracts."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            document = generate()
            section = webhooks_openapi()
            document["webhooks"] = section["webhooks"]
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in section["components"]["schemas"].items():
                schemas.setdefault(name, schema)  # an event model the API shows too: the same
        return app.openapi_schema

    app.openapi = openapi
