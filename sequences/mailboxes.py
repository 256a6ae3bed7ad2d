"""The workspace's connected mailboxes, as the mailer (sending) and the thread-watcher (reading)
use them: rows of `mailer.mailboxes` (the mailer's migrations make it; the mailer writes it)
with their secrets opened. Nothing here logs or returns a secret in a text: `redact` blanks
them from error messages that might echo one."""

from __future__ import annotations

import os
import ssl
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.values import MailboxLimits
from sequences.encryption import SecretBox, SecretsUnreadable


def tls_context() -> ssl.SSLContext:
    """How mailbox servers (SMTP and IMAP) are trusted: the system's CAs, plus `MAIL_CA_FILE`
    (a private CA: in-house servers, tests)."""
    context = ssl.create_default_context()
    if ca_file := os.environ.get("MAIL_CA_FILE"):
        context.load_verify_locations(ca_file)
    return context


@dataclass(frozen=True)
class ConnectedMailbox:
    mailbox_id: uuid.UUID
    workspace_id: uuid.UUID
    address: str
    display_name: str
    owner_user_id: uuid.UUID | None
    auth: str  # password | oauth2
    oauth_provider: str | None
    smtp: dict  # host, port, security, username
    imap: dict | None  # host, port, security, username, folders, idle
    limits: MailboxLimits
    connected_at: datetime
    healthy: bool
    problem: str | None
    checked_at: datetime | None
    secrets: dict = field(repr=False)  # smtp_password, imap_password, refresh_token, ...

    @property
    def smtp_username(self) -> str:
        return self.smtp.get("username") or self.address

    @property
    def imap_username(self) -> str:
        return (self.imap or {}).get("username") or self.address

    def redact(self, message: str) -> str:
        for value in self.secrets.values():
            if isinstance(value, str) and len(value) >= 4:
                message = message.replace(value, "***")
        return message


_COLUMNS = ("mailbox_id, workspace_id, address, display_name, owner_user_id, auth,"
            " oauth_provider, smtp, imap, limits, connected_at, healthy, problem, checked_at,"
            " secrets")


async def load(conn: AsyncConnection, box: SecretBox, where: str = "true",
               params: dict | None = None) -> list[ConnectedMailbox]:
    """The mailboxes matching `where` (SQL over the table's columns), secrets opened. One whose
    secrets no key opens comes back with none and the reason as its problem."""
    rows = await conn.execute(text(f"SELECT {_COLUMNS} FROM mailer.mailboxes WHERE {where}"
                                   " ORDER BY workspace_id, address"), params or {})
    found = []
    for row in rows:
        values = dict(row._mapping)
        try:
            values["secrets"] = box.open(values["secrets"])
        except SecretsUnreadable as error:
            values.update(secrets={}, healthy=False, problem=str(error))
        values["limits"] = MailboxLimits(**values["limits"])
        found.append(ConnectedMailbox(**values))
    return found


async def mark(conn: AsyncConnection, mailbox_id: uuid.UUID, healthy: bool, problem: str | None,
               now: datetime) -> None:
    """What the last send, refresh or test said about the mailbox."""
    await conn.execute(text("UPDATE mailer.mailboxes SET healthy = :healthy, problem = :problem,"
                            " checked_at = :now WHERE mailbox_id = :id"),
                       {"id": mailbox_id, "healthy": healthy, "problem": problem, "now": now})


async def save_secrets(conn: AsyncConnection, box: SecretBox, mailbox_id: uuid.UUID,
                       secrets: dict) -> None:
    """New secrets of a mailbox (a refreshed OAuth token), under the current key."""
    await conn.execute(text("UPDATE mailer.mailboxes SET secrets = :s WHERE mailbox_id = :id"),
                       {"id": mailbox_id, "s": box.seal(secrets)})


# every table holding sealed secrets, by its key columns
_SEALED = {"mailer.mailboxes": ("mailbox_id",), "mailer.oauth_clients": ("workspace_id", "provider"),
           "mailer.oauth_consents": ("consent_id",)}


async def rotate_all(conn: AsyncConnection, box: SecretBox) -> int:
    """Every stored secret (mailboxes, OAuth clients, consents under way) re-encrypted under
    the first key; returns how many."""
    count = 0
    for table, keys in _SEALED.items():
        rows = (await conn.execute(text(f"SELECT {', '.join(keys)}, secrets FROM {table}"
                                        " FOR UPDATE"))).all()
        match = " AND ".join(f"{key} = :{key}" for key in keys)
        for row in rows:
            await conn.execute(text(f"UPDATE {table} SET secrets = :s WHERE {match}"),
                               {**{key: getattr(row, key) for key in keys},
                                "s": box.rotate(row.secrets)})
        count += len(rows)
    return count
