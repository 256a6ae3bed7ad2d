"""Thread-watcher handlers: remember which sent Message-IDs belong to which enrollment."""

from __future__ import annotations

from sqlalchemy import text

from contracts.events import EmailSent
from sequences.messaging.consumer import Delivery, Subscription

watcher = Subscription("thread-watcher", ["delivery"], transaction_per_batch=True)


@watcher.on(EmailSent)
async def remember_sent(event: EmailSent, d: Delivery) -> None:
    await d.conn.execute(
        text(
            "INSERT INTO watcher.sent_messages (message_id, enrollment_id, sequence_id,"
            " contact_id, recipient, subject, sent_at) VALUES (:message_id, :enrollment_id,"
            " :sequence_id, :contact_id, :recipient, :subject, :sent_at)"
            " ON CONFLICT (message_id) DO NOTHING"
        ),
        event.model_dump(
            include={"message_id", "enrollment_id", "sequence_id", "contact_id", "recipient",
                     "subject", "sent_at"}
        ),
    )
