"""The webhooks service: delivers a workspace's events to the HTTPS URLs it registered, signed,
retried with backoff, in order per enrollment, with a delivery log and a manual redeliver.

    WEBHOOK_RETRY_SECONDS     the first retry's delay, doubled after each failure up to an hour
                              (default 10)
    WEBHOOK_MAX_ATTEMPTS      attempts before a delivery is given up (default 12: about 7 hours)
    WEBHOOK_TIMEOUT_SECONDS   how long a receiver may take to answer (default 10)
    WEBHOOK_CA_FILE           extra CA certificates (PEM) to trust for receivers (default none)
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path

from contracts import commands as c
from sequences import metrics, operations
from sequences.bootstrap import Runtime, ServiceParts, run_service
from sequences.db import Migrations
from services.webhooks.adapters import WebhookPoster
from services.webhooks.domain import RetryPolicy
from services.webhooks.handlers import WebhookHandlers, feed

NAME = "webhooks"
MIGRATIONS = Migrations(NAME, Path(__file__).parent / "migrations")


def build(runtime: Runtime) -> ServiceParts:
    retry = RetryPolicy(first_delay=timedelta(seconds=float(os.environ.get(
                            "WEBHOOK_RETRY_SECONDS", "10"))),
                        max_attempts=int(os.environ.get("WEBHOOK_MAX_ATTEMPTS", "12")))
    poster = WebhookPoster(float(os.environ.get("WEBHOOK_TIMEOUT_SECONDS", "10")),
                           os.environ.get("WEBHOOK_CA_FILE") or None)
    handlers = WebhookHandlers(runtime, poster, retry)
    return ServiceParts(
        subscriptions=[feed(handlers)],
        requests={
            c.RegisterWebhook: handlers.register,
            c.ListWebhooks: handlers.list_webhooks,
            c.GetWebhook: handlers.get_webhook,
            c.DeleteWebhook: handlers.delete_webhook,
            c.ChangeWebhook: handlers.change_webhook,
            c.RotateWebhookSecret: handlers.rotate_secret,
            c.EndSecretRotation: handlers.end_rotation,
            c.ListWebhookDeliveries: handlers.list_deliveries,
            c.RedeliverWebhook: handlers.redeliver,
        },
        loops=[handlers.run_dispatch],
        samples=[(_BACKLOG, lambda: _backlog(runtime))],
    )


_BACKLOG = ("sequences.webhook.pending", "sequences.webhook.oldest_pending_age")


async def _backlog(runtime: Runtime) -> list[metrics.Sample]:
    pending, age = await operations.webhook_backlog(runtime.engine, runtime.clock.now())
    return [(_BACKLOG[0], {}, pending), (_BACKLOG[1], {}, age)]


def main() -> None:
    asyncio.run(run_service(NAME, build, (MIGRATIONS,)))
