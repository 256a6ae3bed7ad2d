"""A local Maildir as the mailbox: the dev stack's stand-in for a rep's IMAP inbox.

Messages waiting in `new/` are unread; once examined they move to `cur/`, as a mail client
would move them. `deliver` puts a message in the way an MTA does (write in `tmp/`, rename into
`new/`), so the watcher never reads half a file. Folders other than INBOX are Maildir++
subfolders (`.Bounces/`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

from services.thread_watcher.config import MailboxConfig
from services.thread_watcher.mail import READ_LIMIT
from services.thread_watcher.mailbox import (
    Fetched,
    FolderUnavailable,
    MailboxError,
    Position,
    Unread,
)


class MaildirSession:
    supports_idle = False

    def __init__(self, config: MailboxConfig):
        assert config.path is not None
        self.root = config.path
        self.folders = config.folders

    async def open(self) -> None:
        try:
            for folder in self.folders:
                ensure_maildir(self._folder(folder))
        except OSError as error:
            raise MailboxError(f"maildir {self.root}: {error}") from None

    async def close(self) -> None:
        """Nothing is held open between scans."""

    async def unread(self, folder: str, after: Position | None, since: datetime) -> Unread:
        new = self._folder(folder) / "new"
        try:
            names = sorted(p.name for p in new.iterdir() if not p.name.startswith("."))
        except OSError as error:
            raise FolderUnavailable(f"folder {folder!r}: {error}") from None
        return Unread(self._read(new, names), None)

    async def acknowledge(self, fetched: Fetched) -> None:
        assert fetched.path is not None
        path = Path(fetched.path)
        try:
            os.replace(path, path.parent.parent / "cur" / f"{path.name}:2,S")
        except FileNotFoundError:
            pass  # moved already (by a person, or by the replica that examined it first)

    def _folder(self, folder: str) -> Path:
        return self.root if folder.upper() == "INBOX" else self.root / f".{folder}"

    @staticmethod
    async def _read(new: Path, names: list[str]) -> AsyncIterator[Fetched]:
        for name in names:
            try:
                raw = await asyncio.to_thread(_read_head, new / name)
            except FileNotFoundError:
                continue  # taken meanwhile
            yield Fetched(raw, None, str(new / name))


def _read_head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(READ_LIMIT + 1)


def ensure_maildir(path: Path) -> None:
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)


def deliver(root: Path, raw: bytes) -> Path:
    """Put a message into the Maildir's INBOX as an MTA would; returns its path in new/."""
    ensure_maildir(root)
    name = f"{time.time_ns()}.{uuid.uuid4().hex}.{socket.gethostname()}"
    temporary = root / "tmp" / name
    temporary.write_bytes(raw)
    delivered = root / "new" / name
    os.replace(temporary, delivered)
    return delivered
