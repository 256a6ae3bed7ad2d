"""Webhooks service: queues a delivery for each event a workspace's webhook wants (the feed),
sends due deliveries in order per enrollment (the dispatcher), and answers the gateway.

Deliveries are at least once: a delivery is marked in the transaction that claimed it, after
the receiver answered, so a crash between the two sends it again (receivers drop repeats by
`webhook-id`, the delivery's id).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.base import EVENT_TYPES, EventEnvelope
from contracts.commands import (
    ChangeWebhook,
    DeleteWebhook,
    EndSecretRotation,
    GetWebhook,
    ListWebhookDeliveries,
    ListWebhooks,
    RedeliverWebhook,
    RegisterWebhook,
    RotateWebhookSecret,
)
from contracts.views import (
    Created,
    NewWebhook,
    WebhookDeliveryPage,
    WebhookDeliveryView,
    WebhookPage,
    WebhookView,
)
from contracts.webhooks import WebhookPayload, new_secret
from sequences import metrics
from sequences.bootstrap import Runtime
from sequences.messaging.consumer import Subscription
from sequences.messaging.rpc import Rejected
from sequences.pagination import decode_cursor, decode_moment_and_id, moment_and_id, page_of
from sequences.tracing import tracer
from services.webhooks.adapters import Answer, WebhookPoster
from services.webhooks.domain import RetryPolicy, Wanted, delivered, feed_types, ordering_key

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

_WANTED = text(
    "SELECT webhook_id, workspace_id, event_types FROM webhooks.webhooks"
    " WHERE active AND workspace_id = ANY(CAST(:workspaces AS uuid[]))"
)
_WANTED_TYPES = text("SELECT DISTINCT event_types FROM webhooks.webhooks WHERE active")
_QUEUE = text(
    "INSERT INTO webhooks.deliveries (delivery_id, webhook_id, event_id, event_type,"
    " ordering_key, payload, next_attempt_at, created_at)"
    " SELECT * FROM unnest(CAST(:delivery_ids AS uuid[]), CAST(:webhook_ids AS uuid[]),"
    "   CAST(:event_ids AS uuid[]), CAST(:types AS text[]), CAST(:keys AS text[]),"
    "   CAST(:payloads AS text[]), CAST(:ats AS timestamptz[]), CAST(:ats AS timestamptz[]))"
    " ON CONFLICT (webhook_id, event_id) DO NOTHING"
)
# The oldest pending delivery of each (webhook, ordering key) that is due; one another replica
# is sending is skipped, and holds back the ones behind it (they are not the oldest).
_CLAIM = text(
    """
    SELECT d.seq, d.delivery_id, d.event_id, d.event_type, d.payload, d.attempts, w.url, w.secret,
           CASE WHEN w.previous_secret_expires_at > :now THEN w.previous_secret END
               AS previous_secret,
           w.legacy_headers
    FROM webhooks.deliveries d JOIN webhooks.webhooks w USING (webhook_id)
    WHERE d.state = 'pending' AND d.next_attempt_at <= :now AND w.active
      AND NOT EXISTS (SELECT 1 FROM webhooks.deliveries earlier
                      WHERE earlier.webhook_id = d.webhook_id
                        AND earlier.ordering_key = d.ordering_key
                        AND earlier.state = 'pending' AND earlier.seq < d.seq)
    ORDER BY d.next_attempt_at, d.seq
    LIMIT :limit
    FOR UPDATE OF d SKIP LOCKED
    """
)
_RECORD = text(
    "UPDATE webhooks.deliveries SET state = :state, attempts = attempts + 1,"
    " next_attempt_at = :next_at, last_status = :status, last_error = :error,"
    " delivered_at = :delivered_at WHERE seq = :seq"
)
_DELIVERY_COLUMNS = ("delivery_id, event_id, event_type, ordering_key, state, attempts,"
                     " next_attempt_at, last_status, last_error, created_at, delivered_at")
_WEBHOOK_COLUMNS = ("webhook_id, url, event_types, description, active, created_at,"
                    " legacy_headers, previous_secret_expires_at")


def feed(handlers: WebhookHandlers) -> Subscription:
    """The events of the types some active webhook wants (every category's, when one wants
    every type); none while there is no webhook."""
    categories = sorted({event_type.category for event_type in EVENT_TYPES.values()})
    subscription = Subscription("webhooks", categories, wanted_types=handlers.wanted_types)
    subscription.on_every_batch(handlers.queue_deliveries)
    handlers.feed = subscription
    return subscription


class WebhookHandlers:
    def __init__(self, runtime: Runtime, poster: WebhookPoster, retry: RetryPolicy,
                 batch_size: int = 50, idle_seconds: float = 0.5):
        self.runtime = runtime
        self.poster = poster
        self.retry = retry
        self.batch_size = batch_size
        self.idle_seconds = idle_seconds
        self.feed: Subscription | None = None  # (set by `feed`)

    # --- the feed ---------------------------------------------------------------------------

    async def wanted_types(self, conn: AsyncConnection) -> set[str] | None:
        """What the feed reads: the types the active webhooks want."""
        rows = await conn.execute(_WANTED_TYPES)
        return feed_types(row.event_types for row in rows)

    async def _feed_reads_new_types(self, conn: AsyncConnection) -> None:
        """A webhook being registered: the feed's filter reads its types before the webhook's
        row is committed (in its transaction), so no event of them appended after the
        registration passes the feed unread; when NATS cannot be reached nothing is
        registered."""
        if self.feed is None:
            return
        try:
            await self.feed.read_again(conn)
        except Exception as error:
            log.warning("the webhooks' feed could not set its filter: %s", error)
            raise Rejected(503, "the event feed cannot be reached now; nothing was"
                           " registered: try again in a moment", "event_types") from None

    async def _feed_reads_again(self) -> None:
        """A webhook deleted: the feed's filter drops what nobody wants now (and within
        `EventConsumer.recheck_seconds` in every replica, should this fail: reading a type
        for a while longer loses nothing)."""
        try:
            if self.feed is not None:
                await self.feed.read_again()
        except Exception as error:  # NATS unreachable: the periodic check sets it later
            log.warning("the webhooks' feed could not set its filter now: %s", error)

    async def queue_deliveries(self, run: list[EventEnvelope], conn: AsyncConnection) -> None:
        """A delivery per (wanted event, webhook), in the transaction that moves the feed's
        position: an event redelivered by JetStream queues nothing twice."""
        workspaces = list({e.workspace_id for e in run if e.workspace_id is not None})
        if not workspaces:
            return
        wanted = [Wanted(r.webhook_id, r.workspace_id, tuple(r.event_types))
                  for r in await conn.execute(_WANTED, {"workspaces": workspaces})]
        if not wanted:
            return  # the common case: nobody in these workspaces has a webhook
        rows = [(webhook.webhook_id, event) for envelope in run
                for event in delivered(envelope, wanted) for webhook in wanted
                if webhook.wants(event)]
        if not rows:
            return
        now = self.runtime.clock.now()
        await conn.execute(_QUEUE, {
            "delivery_ids": [uuid.uuid4() for _ in rows],
            "webhook_ids": [webhook_id for webhook_id, _ in rows],
            "event_ids": [e.event_id for _, e in rows],
            "types": [e.type for _, e in rows],
            "keys": [ordering_key(e) for _, e in rows],
            "payloads": [WebhookPayload.of(e).model_dump_json() for _, e in rows],
            "ats": [now] * len(rows),
        })

    # --- the dispatcher ---------------------------------------------------------------------

    async def run_dispatch(self) -> None:
        while True:
            try:
                sent = await self.dispatch_due()
            except Exception:
                log.exception("delivering webhooks failed; retrying")
                sent = 0
            if sent < self.batch_size:
                await self.runtime.clock.wait_for_change(self.idle_seconds)

    async def dispatch_due(self) -> int:
        """Send what is due (at most one per webhook and enrollment at a time), in parallel,
        and record each answer."""
        async with self.runtime.engine.begin() as conn:
            now = self.runtime.clock.now()
            claimed = (await conn.execute(_CLAIM, {"now": now, "limit": self.batch_size})).all()
            if not claimed:
                return 0
            answers = await asyncio.gather(*(self._send(row) for row in claimed))
            now = self.runtime.clock.now()
            outcomes = [self._outcome(row, answer, now) for row, answer in zip(claimed, answers)]
            await conn.execute(_RECORD, outcomes)
        for outcome in outcomes:
            result = "retrying" if outcome["state"] == "pending" else outcome["state"]
            metrics.webhook_deliveries.add(1, {"result": result})
        return len(claimed)

    async def _send(self, row) -> Answer:
        with _tracer.start_as_current_span("webhook.deliver", attributes={
                "event_id": str(row.event_id), "event_type": row.event_type}):
            secrets = [row.secret] + ([row.previous_secret] if row.previous_secret else [])
            return await self.poster.post(row.url, secrets, row.payload.encode(),
                                          row.delivery_id, row.event_id, row.event_type,
                                          row.attempts + 1, legacy_headers=row.legacy_headers)

    def _outcome(self, row, answer: Answer, now: datetime) -> dict:
        if answer.ok:
            return {"seq": row.seq, "state": "delivered", "next_at": None,
                    "status": answer.status, "error": None, "delivered_at": now}
        next_at = self.retry.after_failure(row.attempts + 1, now)
        log.warning("webhook delivery %s to %s failed (attempt %d): %s", row.delivery_id,
                    row.url, row.attempts + 1, answer.error)
        return {"seq": row.seq, "state": "pending" if next_at else "failed", "next_at": next_at,
                "status": answer.status, "error": answer.error, "delivered_at": None}

    # --- requests from the gateway ----------------------------------------------------------

    async def register(self, command: RegisterWebhook) -> NewWebhook:
        secret = command.secret or new_secret()
        async with self.runtime.engine.begin() as conn:
            row = (await conn.execute(text(
                "INSERT INTO webhooks.webhooks (webhook_id, workspace_id, url, event_types,"
                " description, secret, legacy_headers, created_at) VALUES (:id, :ws, :url,"
                f" :types, :description, :secret, :legacy, :at) RETURNING {_WEBHOOK_COLUMNS}"),
                {"id": uuid.uuid4(), "ws": command.workspace_id, "url": command.url,
                 "types": command.event_types, "description": command.description,
                 "secret": secret, "legacy": command.legacy_headers,
                 "at": self.runtime.clock.now()})).one()
            await self._feed_reads_new_types(conn)
        return NewWebhook(**self._view_fields(row._mapping), secret=secret)

    async def change_webhook(self, command: ChangeWebhook) -> WebhookView:
        changes = command.model_dump(include={"legacy_headers", "description"},
                                     exclude_none=True)
        async with self.runtime.engine.begin() as conn:
            await self._webhook(conn, command)
            if changes:
                await conn.execute(text(
                    "UPDATE webhooks.webhooks SET "
                    + ", ".join(f"{name} = :{name}" for name in changes)
                    + " WHERE webhook_id = :id"), {"id": command.webhook_id, **changes})
            return WebhookView(**(await self._webhook(conn, command)))

    async def rotate_secret(self, command: RotateWebhookSecret) -> NewWebhook:
        """The new secret signs from now on, the current one beside it until the grace period
        ends; one rotation at a time (the row lock orders two racing ones)."""
        now = self.runtime.clock.now()
        async with self.runtime.engine.begin() as conn:
            row = (await conn.execute(text(
                "SELECT active, previous_secret_expires_at FROM webhooks.webhooks"
                " WHERE webhook_id = :id AND workspace_id = :ws FOR UPDATE"),
                {"id": command.webhook_id, "ws": command.workspace_id})).first()
            if row is None:
                raise Rejected(404, f"no such webhook: {command.webhook_id}", "webhook_id")
            if not row.active:
                raise Rejected(409, "the webhook was deleted", "webhook_id")
            if row.previous_secret_expires_at and row.previous_secret_expires_at > now:
                raise Rejected(409, "a rotation is running until"
                               f" {row.previous_secret_expires_at.isoformat()}: end it first",
                               "secret")
            secret = command.secret or new_secret()
            await conn.execute(text(
                "UPDATE webhooks.webhooks SET previous_secret = secret, secret = :secret,"
                " previous_secret_expires_at = :until WHERE webhook_id = :id"),
                {"id": command.webhook_id, "secret": secret,
                 "until": now + timedelta(seconds=command.grace_period_seconds)})
            webhook = await self._webhook(conn, command)
        return NewWebhook(**webhook, secret=secret)

    async def end_rotation(self, command: EndSecretRotation) -> WebhookView:
        async with self.runtime.engine.begin() as conn:
            await self._webhook(conn, command)
            await conn.execute(text(
                "UPDATE webhooks.webhooks SET previous_secret = NULL,"
                " previous_secret_expires_at = NULL WHERE webhook_id = :id"),
                {"id": command.webhook_id})
            return WebhookView(**(await self._webhook(conn, command)))

    async def list_webhooks(self, query: ListWebhooks) -> WebhookPage:
        after, params = "true", {}
        if query.page.cursor:
            moment, webhook_id = decode_moment_and_id(query.page.cursor)
            after, params = "(created_at, webhook_id) > (:t, :id)", {"t": moment,
                                                                     "id": webhook_id}
        async with self.runtime.engine.connect() as conn:
            rows = (await conn.execute(text(
                f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks.webhooks WHERE workspace_id = :ws"
                f" AND {after} ORDER BY created_at, webhook_id LIMIT :limit"),
                {"ws": query.workspace_id, "limit": query.page.limit + 1, **params})).all()
        rows, cursor = page_of(rows, query.page.limit,
                               lambda r: moment_and_id(r.created_at, r.webhook_id))
        return WebhookPage(items=[WebhookView(**self._view_fields(r._mapping)) for r in rows],
                           next_cursor=cursor)

    async def get_webhook(self, query: GetWebhook) -> WebhookView:
        async with self.runtime.engine.connect() as conn:
            return WebhookView(**(await self._webhook(conn, query)))

    async def delete_webhook(self, command: DeleteWebhook) -> Created:
        async with self.runtime.engine.begin() as conn:
            await self._webhook(conn, command)
            await conn.execute(text(
                "UPDATE webhooks.webhooks SET active = false WHERE webhook_id = :id"),
                {"id": command.webhook_id})
            await conn.execute(text(
                "UPDATE webhooks.deliveries SET state = 'failed', next_attempt_at = NULL,"
                " last_error = 'webhook deleted' WHERE webhook_id = :id AND state = 'pending'"),
                {"id": command.webhook_id})
        await self._feed_reads_again()
        return Created(id=command.webhook_id)

    async def list_deliveries(self, query: ListWebhookDeliveries) -> WebhookDeliveryPage:
        """The delivery log, newest first."""
        clauses, params = ["webhook_id = :id"], {"id": query.webhook_id,
                                                "limit": query.page.limit + 1}
        if query.state:
            clauses.append("state = :state")
            params["state"] = query.state
        if query.page.cursor:
            [seq] = decode_cursor(query.page.cursor, 1)
            if not isinstance(seq, int):
                raise Rejected(422, "not a cursor this list gave out", "cursor")
            clauses.append("seq < :seq")
            params["seq"] = seq
        async with self.runtime.engine.connect() as conn:
            await self._webhook(conn, query)
            rows = (await conn.execute(text(
                f"SELECT seq, {_DELIVERY_COLUMNS} FROM webhooks.deliveries"
                f" WHERE {' AND '.join(clauses)} ORDER BY seq DESC LIMIT :limit"), params)).all()
        rows, cursor = page_of(rows, query.page.limit, lambda r: [r.seq])
        return WebhookDeliveryPage(
            items=[WebhookDeliveryView(**{k: v for k, v in r._mapping.items() if k != "seq"})
                   for r in rows], next_cursor=cursor)

    async def redeliver(self, command: RedeliverWebhook) -> WebhookDeliveryView:
        async with self.runtime.engine.begin() as conn:
            webhook = await self._webhook(conn, command)
            if not webhook["active"]:
                raise Rejected(409, "the webhook was deleted", "webhook_id")
            row = (await conn.execute(text(
                "UPDATE webhooks.deliveries SET state = 'pending', attempts = 0,"
                " next_attempt_at = :now, last_error = NULL, delivered_at = NULL"
                " WHERE webhook_id = :w AND delivery_id = :d"
                f" RETURNING {_DELIVERY_COLUMNS}"),
                {"w": command.webhook_id, "d": command.delivery_id,
                 "now": self.runtime.clock.now()})).first()
        if row is None:
            raise Rejected(404, f"no such delivery: {command.delivery_id}", "delivery_id")
        return WebhookDeliveryView(**row._mapping)

    async def _webhook(self, conn: AsyncConnection, request) -> dict:
        """The webhook of the request, in the request's workspace (else 404)."""
        row = (await conn.execute(text(
            f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks.webhooks"
            " WHERE webhook_id = :id AND workspace_id = :ws"),
            {"id": request.webhook_id, "ws": request.workspace_id})).first()
        if row is None:
            raise Rejected(404, f"no such webhook: {request.webhook_id}", "webhook_id")
        return self._view_fields(row._mapping)

    def _view_fields(self, row) -> dict:
        """A webhook row as its view: a rotation shows while its grace period runs."""
        fields = dict(row)
        ends = fields.pop("previous_secret_expires_at")
        fields["rotation_ends_at"] = ends if ends and ends > self.runtime.clock.now() else None
        return fields
