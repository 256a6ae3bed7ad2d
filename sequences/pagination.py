"""Cursor pagination: a page ends with an opaque cursor naming its last row's sort key.

Keyset, not offset: a page stays right while rows are added, and page 1,000 costs what page 1
costs.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from typing import Any

from sequences.messaging.rpc import Rejected


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, default=str).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, parts: int) -> list[Any]:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, UnicodeDecodeError):
        key = None
    if not isinstance(key, list) or len(key) != parts:
        raise Rejected(422, "not a cursor this list gave out", "cursor")
    return key


def decode_moment_and_id(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The key of lists ordered by (created_at, id): checked here, so a forged cursor is a 422
    rather than a database error."""
    moment, key = decode_cursor(cursor, 2)
    try:
        return datetime.fromisoformat(str(moment)), uuid.UUID(str(key))
    except ValueError:
        raise Rejected(422, "not a cursor this list gave out", "cursor") from None


def moment_and_id(moment: datetime, key: uuid.UUID) -> list[str]:
    return [moment.isoformat(), str(key)]


def page_of(rows: list, limit: int, key) -> tuple[list, str | None]:
    """The first `limit` rows (the query fetched one more to know whether a next page exists)."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(key(rows[-1]))
