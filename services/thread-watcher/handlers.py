"""Thread-watcher handlers: remember which sent Message-IDs belong to which enrollment and which
enrollments ended, and answer how the watched mailboxes are doing."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.base import EventEnvelope
from contracts.commands import GetMailboxHealth
from contracts.events import (
    EmailSent,
    EnrollmentBounced,
    EnrollmentCompleted,
    EnrollmentReplied,
    EnrollmentStopped,
)
from contracts.views import MailboxHealthView
from sequences.messaging.consumer import Subscription
from services.thread_watcher import repository
from services.thread_watcher.config import WatcherSettings

watcher = Subscription("thread-watcher", ["delivery"])
# A consumer of its own, not a second category on the one above: a durable consumer keeps the
# subjects it was created with.
enrollment_ends = Subscription("thread-watcher-ends", ["enrollment"])


@watcher.on_batch(EmailSent)
async def remember_sent(run: list[EventEnvelope], conn) -> None:
    """Set-based: a run of sent emails is one statement."""
    await repository.remember_sent(conn, [(e.data, e.workspace_id) for e in run])


_ENDED_AT = {EnrollmentReplied: "replied_at", EnrollmentBounced: "bounced_at",
             EnrollmentStopped: "stopped_at", EnrollmentCompleted: "completed_at"}


def _remember_ends(event_type):
    moment = _ENDED_AT[event_type]

    async def remember_ends(run: list[EventEnvelope], conn) -> None:
        await repository.end_enrollments(conn, [
            (e.data["enrollment_id"], event_type.type_name(), e.data[moment]) for e in run])

    return remember_ends


for _ending in _ENDED_AT:
    enrollment_ends.on_batch(_ending)(_remember_ends(_ending))


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
