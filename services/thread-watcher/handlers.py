"""Thread-watcher handlers: remember which sent Message-IDs belong to which enrollment and which
enrollments ended, and answer how the watched mailboxes are doing."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.commands import GetMailboxHealth
from contracts.events import (
    EmailSent,
    EnrollmentBounced,
    EnrollmentCompleted,
    EnrollmentReplied,
    EnrollmentStopped,
)
from contracts.views import MailboxHealthView
from sequences.messaging.consumer import Delivery, Subscription
from services.thread_watcher import repository
from services.thread_watcher.config import WatcherSettings

watcher = Subscription("thread-watcher", ["delivery"])
# A consumer of its own, not a second category on the one above: a durable consumer keeps the
# subjects it was created with.
enrollment_ends = Subscription("thread-watcher-ends", ["enrollment"])


@watcher.on(EmailSent)
async def remember_sent(event: EmailSent, d: Delivery) -> None:
    await d.conn.execute(
        text(
            "INSERT INTO watcher.sent_messages (message_id, workspace_id, enrollment_id,"
            " sequence_id, contact_id, recipient, subject, sent_at) VALUES (:message_id,"
            " :workspace_id, :enrollment_id, :sequence_id, :contact_id, :recipient, :subject,"
            " :sent_at) ON CONFLICT (message_id) DO NOTHING"
        ),
        {**event.model_dump(include={"message_id", "enrollment_id", "sequence_id", "contact_id",
                                     "recipient", "subject", "sent_at"}),
         "workspace_id": d.envelope.workspace_id},
    )


_ENDED_AT = {EnrollmentReplied: "replied_at", EnrollmentBounced: "bounced_at",
             EnrollmentStopped: "stopped_at", EnrollmentCompleted: "completed_at"}


async def remember_end(event, d: Delivery) -> None:
    await repository.end_enrollment(d.conn, event.enrollment_id, event.type_name(),
                                    getattr(event, _ENDED_AT[type(event)]))


for _ending in _ENDED_AT:
    enrollment_ends.on(_ending)(remember_end)


class HealthQueries:
    def __init__(self, engine: AsyncEngine, settings: WatcherSettings, connected=None):
        self._engine = engine
        self._mailboxes = settings.mailboxes
        self._connected = connected  # the workspaces' connected mailboxes (a coroutine)

    async def mailbox_health(self, query: GetMailboxHealth) -> list[MailboxHealthView]:
        """The mailboxes of the asked addresses, and the catch-alls; one not yet tried shows
        as connecting."""
        asked = {address.lower() for address in query.addresses}
        mailboxes = [*self._mailboxes, *(await self._connected() if self._connected else [])]
        names = list(dict.fromkeys(m.name for m in mailboxes
                                   if not m.address or m.address in asked))
        async with self._engine.connect() as conn:
            known = {h.mailbox: h for h in await repository.health(conn, names)}
        return [known.get(name) or MailboxHealthView(mailbox=name, healthy=True,
                                                     state="connecting", folders=[], idle=False)
                for name in names]
