"""Mailer handlers: the copies of what rendering needs (sequences, contacts, suppressions,
ended enrollments), kept from the events, and the mailer's durable consumer, which routes due
steps to `services.mailer.sending` and A/B winners to `services.mailer.requests`."""

from __future__ import annotations

import json

from sqlalchemy import text

from contracts.events import (
    AddressSuppressed,
    BounceDetected,
    ContactCreated,
    ContactOptedOut,
    ContactsImported,
    ContactUpdated,
    VariantWinnerChosen,
    EnrollmentBounced,
    EnrollmentReplied,
    EnrollmentStopped,
    SequenceCreated,
    SequenceSettingsChanged,
    SequenceStepsChanged,
    StepDue,
    SuppressionRemoved,
)
from contracts.base import EventEnvelope
from contracts.values import pool_addresses, steps_json
from sequences.messaging.consumer import Delivery, Subscription
from services.mailer.mailbox_pauses import MailboxGuard
from services.mailer.requests import MailerRequests
from services.mailer.sending import StepSender

_MERGE_FIELDS = ("name", "company", "job_title", "owner_name")  # a contact's, for rendering


class MailerCopies:
    """What rendering and sending need, copied from the events into the mailer's tables."""

    # --- what rendering needs ---------------------------------------------------------------

    async def on_sequence_created(self, event: SequenceCreated, d: Delivery) -> None:
        await d.conn.execute(
            text(
                "INSERT INTO mailer.sequences (sequence_id, workspace_id, sender_name,"
                " sender_email, timezone, steps, language, mailbox_pool, track_opens,"
                " track_clicks)"
                " VALUES (:id, :ws, :name, :email, :timezone, CAST(:steps AS jsonb), :language,"
                " :pool, :opens, :clicks) ON CONFLICT (sequence_id) DO NOTHING"
            ),
            {"id": event.sequence_id, "ws": d.envelope.workspace_id, "name": event.sender_name, "email": event.sender_email,
             "timezone": event.timezone, "steps": steps_json(event.steps),
             "language": event.language,
             "pool": pool_addresses(event.mailbox_pool),
             "opens": event.tracking.opens, "clicks": event.tracking.clicks},
        )

    async def on_settings_changed(self, event: SequenceSettingsChanged, d: Delivery) -> None:
        """The sender, zone, language and mailbox pool the next emails go out with (an
        enrollment keeps the pool mailbox it already got)."""
        settings = event.settings
        await d.conn.execute(
            text("UPDATE mailer.sequences SET sender_name = :name, sender_email = :email,"
                 " timezone = :timezone, language = :language, mailbox_pool = :pool,"
                 " track_opens = :opens, track_clicks = :clicks"
                 " WHERE sequence_id = :id"),
            {"id": event.sequence_id, "name": settings.sender_name,
             "email": settings.sender_email, "timezone": settings.timezone,
             "language": settings.language,
             "pool": pool_addresses(settings.mailbox_pool),
             "opens": settings.tracking.opens, "clicks": settings.tracking.clicks},
        )

    async def on_steps_changed(self, event: SequenceStepsChanged, d: Delivery) -> None:
        await d.conn.execute(
            text("UPDATE mailer.sequences SET steps = CAST(:steps AS jsonb) WHERE sequence_id = :id"),
            {"id": event.sequence_id, "steps": steps_json(event.steps)},
        )

    async def on_contacts_created(self, run: list[EventEnvelope], conn) -> None:
        """Set-based, on binary parameters: a run of contacts is one statement (one at a time,
        this consumer took more CPU per imported contact than the import)."""
        await self._insert_contacts(conn, [(e.data, e.workspace_id) for e in run])

    async def on_contacts_imported(self, run: list[EventEnvelope], conn) -> None:
        """Every contact of every chunk of the run in one statement."""
        await self._insert_contacts(conn, [(contact, e.workspace_id)
                                           for e in run for contact in e.data["contacts"]])

    async def _insert_contacts(self, conn, contacts: list[tuple[dict, object]]) -> None:
        """New contacts: (the fields of their `ContactCreated`, workspace)."""
        await conn.exec_driver_sql(
            "INSERT INTO mailer.contacts (contact_id, workspace_id, email, merge_values)"
            " SELECT c.id, c.workspace_id, c.email, c.merge::jsonb"
            " FROM unnest(%(ids)b::uuid[], %(workspaces)b::uuid[], %(emails)b::text[],"
            "   %(merge)b::text[]) AS c(id, workspace_id, email, merge)"
            " ON CONFLICT (contact_id) DO NOTHING",
            {"ids": [data["contact_id"] for data, _ in contacts],
             "workspaces": [workspace_id for _, workspace_id in contacts],
             "emails": [data["email"] for data, _ in contacts],
             "merge": [json.dumps({f: data.get(f, "") for f in _MERGE_FIELDS})
                       for data, _ in contacts]},
        )

    async def on_contact_updated(self, event: ContactUpdated, d: Delivery) -> None:
        merge = {k: v for k, v in event.changes.items() if k in _MERGE_FIELDS}
        await d.conn.execute(
            text("UPDATE mailer.contacts SET email = coalesce(:email, email),"
                 " merge_values = merge_values || CAST(:merge AS jsonb) WHERE contact_id = :id"),
            {"id": event.contact_id, "email": event.changes.get("email"),
             "merge": json.dumps(merge)},
        )

    async def on_contact_opted_out(self, event: ContactOptedOut, d: Delivery) -> None:
        """Never mailed again, whatever is already due."""
        await d.conn.execute(
            text("UPDATE mailer.contacts SET opted_out = true WHERE contact_id = :id"),
            {"id": event.contact_id},
        )

    async def on_suppressed(self, event: AddressSuppressed, d: Delivery) -> None:
        await d.conn.execute(
            text("INSERT INTO mailer.suppressions (workspace_id, value) VALUES (:ws, :value)"
                 " ON CONFLICT DO NOTHING"),
            {"ws": d.envelope.workspace_id, "value": event.value})

    async def on_suppression_removed(self, event: SuppressionRemoved, d: Delivery) -> None:
        await d.conn.execute(
            text("DELETE FROM mailer.suppressions WHERE workspace_id = :ws AND value = :value"),
            {"ws": d.envelope.workspace_id, "value": event.value})

    async def on_enrollment_halted(self, event, d: Delivery) -> None:
        await d.conn.execute(
            text("INSERT INTO mailer.halted_enrollments (enrollment_id, reason)"
                 " VALUES (:id, :reason) ON CONFLICT DO NOTHING"),
            {"id": event.enrollment_id, "reason": event.type_name()},
        )


def subscription(copies: MailerCopies, sender: StepSender, requests: MailerRequests,
                 guard: MailboxGuard) -> Subscription:
    mailer = Subscription("mailer", ["sequence", "contact", "import", "enrollment", "schedule",
                                     "suppression", "bounce", "experiment"])
    mailer.on(VariantWinnerChosen)(requests.on_winner_chosen)
    mailer.on(AddressSuppressed)(copies.on_suppressed)
    mailer.on(SuppressionRemoved)(copies.on_suppression_removed)
    mailer.on(BounceDetected)(guard.on_bounce)
    mailer.on(SequenceCreated)(copies.on_sequence_created)
    mailer.on(SequenceStepsChanged)(copies.on_steps_changed)
    mailer.on(SequenceSettingsChanged)(copies.on_settings_changed)
    mailer.on_batch(ContactCreated)(copies.on_contacts_created)
    mailer.on_batch(ContactsImported)(copies.on_contacts_imported)
    mailer.on(ContactUpdated)(copies.on_contact_updated)
    mailer.on(ContactOptedOut)(copies.on_contact_opted_out)
    mailer.on_batch(StepDue)(sender.on_steps_due)
    for halt in (EnrollmentReplied, EnrollmentBounced, EnrollmentStopped):
        mailer.on(halt)(copies.on_enrollment_halted)
    return mailer
