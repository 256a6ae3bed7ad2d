"""The suppression list as CSV: read a file of addresses and domains (one a line, with an
optional `note` column) into entries and row errors, and write the list out. Used by
`POST /v1/suppressions/import`, `GET /v1/suppressions/export` and the web app's settings."""

from __future__ import annotations

import csv
import io
from typing import Any, Awaitable, Callable, Iterable

from pydantic import ValidationError

from contracts.commands import AddSuppressions, ListSuppressions, Page, SuppressionEntry
from contracts.views import RowError, SuppressionPage, SuppressionResult, SuppressionView
from services.enrollment.contact_import import EMPTY_FILE, ImportFileError, decode

# the column holding the address or domain, by its header (lowercased)
_VALUE_HEADERS = ("value", "email", "address", "domain", "이메일", "메일", "도메인", "주소")
_NOTE_HEADERS = ("note", "reason", "메모", "사유")
EXPORT_COLUMNS = ("value", "kind", "reason", "note", "added_at")
CHUNK = 5000  # entries per AddSuppressions command


def parse(data: bytes) -> tuple[list[SuppressionEntry], list[RowError]]:
    """Entries from a CSV file (UTF-8, with BOM, or CP949). With a header naming a value
    column (value, email, domain, 이메일, 도메인, ...) that column is read; without one, the
    first column of every line."""
    rows = list(csv.reader(io.StringIO(decode(data))))
    if not rows:
        raise ImportFileError("file", EMPTY_FILE)
    header = [cell.strip().lower() for cell in rows[0]]
    value_at = next((header.index(h) for h in _VALUE_HEADERS if h in header), None)
    note_at = next((header.index(h) for h in _NOTE_HEADERS if h in header), None)
    first_line = 2
    if value_at is None:  # no header: every line is data
        value_at, first_line = 0, 1
    else:
        rows = rows[1:]
    entries, failed = [], []
    for line, row in enumerate(rows, start=first_line):
        if not any(cell.strip() for cell in row):
            continue
        value = row[value_at].strip() if value_at < len(row) else ""
        note = row[note_at].strip() if note_at is not None and note_at < len(row) else ""
        try:
            entries.append(SuppressionEntry(value=value, note=note))
        except ValidationError as error:
            first = error.errors()[0]
            failed.append(RowError(row=line, field=str(first["loc"][0]),
                                   message=first["msg"].removeprefix("Value error, ")))
    return entries, failed


def export(items: Iterable[SuppressionView]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    for item in items:
        writer.writerow([item.value, item.kind, item.reason, item.note, item.added_at.isoformat()])
    return out.getvalue()


Asker = Callable[..., Awaitable[Any]]  # ask(kind, **fields): a command in the caller's workspace


async def import_file(ask: Asker, data: bytes) -> SuppressionResult:
    """Parse a file and add its entries, a chunk at a time; raises ImportFileError for a file
    that is unusable as a whole."""
    entries, failed = parse(data)
    added = already = 0
    for start in range(0, len(entries), CHUNK):
        result = SuppressionResult.model_validate(await ask(
            AddSuppressions, reason="import", entries=entries[start:start + CHUNK]))
        added, already = added + result.added, already + result.already
    return SuppressionResult(added=added, already=already, failed=failed)


async def every(ask: Asker) -> list[SuppressionView]:
    """The whole list, page by page."""
    items, cursor = [], None
    while True:
        page = SuppressionPage.model_validate(await ask(
            ListSuppressions, page=Page(limit=500, cursor=cursor)))
        items += page.items
        if (cursor := page.next_cursor) is None:
            return items
