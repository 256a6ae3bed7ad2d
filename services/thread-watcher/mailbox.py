"""What reading a mailbox gives the watcher, whichever kind of mailbox it is (IMAP, Maildir)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class MailboxError(Exception):
    """The mailbox cannot be read now: unreachable, login refused, a folder missing, a protocol
    error. The watcher retries it later. The text never carries a password."""


class FolderUnavailable(MailboxError):
    """One folder cannot be read (missing, not permitted); the mailbox's other folders can."""


@dataclass(frozen=True)
class Position:
    """How far a folder has been read: the last UID examined, valid with its UIDVALIDITY."""

    uidvalidity: int
    last_uid: int


@dataclass(frozen=True)
class Fetched:
    """A message as read from a folder, and the position just after it."""

    raw: bytes
    position: Position | None  # None where the mailbox has no UIDs (Maildir)
    path: str | None = None  # Maildir only: the file to move out of new/ once examined


@dataclass(frozen=True)
class Unread:
    """The messages of a folder after a position, and the position once they are all read."""

    messages: AsyncIterator[Fetched]
    position_after: Position | None


class MailSession(Protocol):
    supports_idle: bool

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def unread(self, folder: str, after: Position | None, since: datetime) -> Unread: ...

    async def acknowledge(self, fetched: Fetched) -> None:
        """Called once the message's decision is committed."""
        ...
