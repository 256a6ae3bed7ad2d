"""Cursor pagination: a page ends with an opaque cursor naming its last row's sort key.

Keyset, not offset: a page stays right while rows are added, and page 1,000 costs what page 1
costs.
"""

from __future__ import annotations

import base64
import json
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


def page_of(rows: list, limit: int, key) -> tuple[list, str | None]:
    """The first `limit` rows (the query fetched one more to know whether a next page exists)."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(key(rows[-1]))
