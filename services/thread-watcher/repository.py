"""The thread-watcher's tables (schema `watcher`): sent messages, ended enrollments, folder
positions, examined messages and mailbox health. Every function runs in the caller's
connection, so a caller can make several of them one transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.views import MailboxHealthView
from services.thread_watcher.domain import Decision, SentMessage, Wanted
from services.thread_watcher.mailbox import Position

_FIND_SENT = text(
    "SELECT s.message_id, s.enrollment_id, lower(s.recipient) AS recipient, s.subject,"
    " s.sent_at, e.enrollment_id IS NULL AS open, s.workspace_id"
    " FROM watcher.sent_messages s"
    " LEFT JOIN watcher.ended_enrollments e ON e.enrollment_id = s.enrollment_id"
    " WHERE s.message_id = ANY(:ids) OR lower(s.recipient) = ANY(:addresses)"
)


async def find_sent(conn: AsyncConnection, wanted: Wanted) -> list[SentMessage]:
    rows = await conn.execute(_FIND_SENT, {"ids": sorted(wanted.message_ids),
                                           "addresses": sorted(wanted.addresses)})
    return [SentMessage(**row._mapping) for row in rows]


async def remember_sent(conn: AsyncConnection, sent: list[tuple[dict, object]]) -> None:
    """Sent emails: (the fields of their `EmailSent`, workspace); one statement for them all,
    a message already known (a redelivery) left as it is."""
    await conn.exec_driver_sql(
        "INSERT INTO watcher.sent_messages (message_id, workspace_id, enrollment_id,"
        " sequence_id, contact_id, recipient, subject, sent_at)"
        " SELECT * FROM unnest(%(ids)b::text[], %(workspaces)b::uuid[], %(enrollments)b::uuid[],"
        "   %(sequences)b::uuid[], %(contacts)b::uuid[], %(recipients)b::text[],"
        "   %(subjects)b::text[], %(ats)b::timestamptz[])"
        " ON CONFLICT (message_id) DO NOTHING",
        {"ids": [e["message_id"] for e, _ in sent], "workspaces": [w for _, w in sent],
         "enrollments": [e["enrollment_id"] for e, _ in sent],
         "sequences": [e["sequence_id"] for e, _ in sent],
         "contacts": [e["contact_id"] for e, _ in sent],
         "recipients": [e["recipient"] for e, _ in sent],
         "subjects": [e["subject"] for e, _ in sent], "ats": [e["sent_at"] for e, _ in sent]},
    )


async def end_enrollments(conn: AsyncConnection, ended: list[tuple[str, str, str]]) -> None:
    """Ended enrollments: (id, the type of the event that ended it, when); the first end of an
    enrollment is the one kept."""
    await conn.exec_driver_sql(
        "INSERT INTO watcher.ended_enrollments (enrollment_id, ended_as, ended_at)"
        " SELECT * FROM unnest(%(ids)b::uuid[], %(ended_as)b::text[], %(ats)b::timestamptz[])"
        " ON CONFLICT DO NOTHING",
        {"ids": [i for i, _, _ in ended], "ended_as": [a for _, a, _ in ended],
         "ats": [at for _, _, at in ended]},
    )


async def position(conn: AsyncConnection, mailbox: str, folder: str) -> Position | None:
    row = (await conn.execute(
        text("SELECT uidvalidity, last_uid FROM watcher.folder_positions"
             " WHERE mailbox = :m AND folder = :f"),
        {"m": mailbox, "f": folder},
    )).first()
    return Position(row.uidvalidity, row.last_uid) if row else None


async def save_position(conn: AsyncConnection, mailbox: str, folder: str, at: Position,
                        now: datetime) -> None:
    """Move forward only, except to a new UIDVALIDITY, whose UIDs start over."""
    await conn.execute(
        text(
            "INSERT INTO watcher.folder_positions AS p"
            " (mailbox, folder, uidvalidity, last_uid, updated_at) VALUES (:m, :f, :v, :u, :now)"
            " ON CONFLICT (mailbox, folder) DO UPDATE SET uidvalidity = EXCLUDED.uidvalidity,"
            " last_uid = CASE WHEN p.uidvalidity = EXCLUDED.uidvalidity"
            "   THEN greatest(p.last_uid, EXCLUDED.last_uid) ELSE EXCLUDED.last_uid END,"
            " updated_at = EXCLUDED.updated_at"
        ),
        {"m": mailbox, "f": folder, "v": at.uidvalidity, "u": at.last_uid, "now": now},
    )


async def record_examined(conn: AsyncConnection, key: str, mailbox: str, folder: str,
                          decision: Decision, now: datetime) -> bool:
    """Record the decision; False when this message was examined before (nothing to do). A
    second replica examining the same message waits here on the first one's row."""
    inserted = await conn.execute(
        text(
            "INSERT INTO watcher.examined_messages (message_key, mailbox, folder, decision,"
            " enrollment_id, reasons, examined_at) VALUES (:key, :m, :f, :decision, :e,"
            " :reasons, :now) ON CONFLICT (message_key) DO NOTHING RETURNING 1"
        ),
        {"key": key, "m": mailbox, "f": folder, "decision": decision.label,
         "e": decision.sent.enrollment_id if decision.sent else None,
         "reasons": "; ".join(decision.reasons), "now": now},
    )
    return inserted.first() is not None


async def save_health(conn: AsyncConnection, health: MailboxHealthView) -> None:
    values = health.model_dump()
    columns = ", ".join(values)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in values if c != "mailbox")
    await conn.execute(
        text(f"INSERT INTO watcher.mailbox_health ({columns})"
             f" VALUES ({', '.join(':' + c for c in values)})"
             f" ON CONFLICT (mailbox) DO UPDATE SET {updates}"),
        values,
    )


async def health(conn: AsyncConnection, mailboxes: list[str]) -> list[MailboxHealthView]:
    rows = await conn.execute(
        text("SELECT * FROM watcher.mailbox_health WHERE mailbox = ANY(:m) ORDER BY mailbox"),
        {"m": mailboxes},
    )
    return [MailboxHealthView(**row._mapping) for row in rows]
