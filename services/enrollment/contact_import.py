"""CSV import of contacts: decode (UTF-8, UTF-8 with BOM from Excel, CP949 from Korean Excel),
map columns to fields, validate each row, and send the good rows to the enrollment service in
chunks. Used alike by `POST /v1/contacts/import` and `sequences contacts import`."""

from __future__ import annotations

import uuid

import csv
import io
from dataclasses import dataclass, field
from typing import Callable

from nats.aio.client import Client
from pydantic import ValidationError

from contracts.commands import ContactFields, ImportContacts
from contracts.views import ImportReport, RowError
from sequences.messaging import rpc

MAX_IMPORT_BYTES = 50 * 1024 * 1024
CHUNK_ROWS = 2000  # rows per ImportContacts command (one transaction each; well under NATS's 1 MB)

FIELDS = tuple(ContactFields.model_fields)
# header names understood without a mapping: the field names, and the Korean ones sales teams use
DEFAULT_HEADERS = {
    **{name: name for name in FIELDS},
    "고객명": "name", "이름": "name", "회사명": "company", "회사": "company", "직함": "job_title",
    "담당자명": "owner_name", "담당자": "owner_name", "이메일": "email", "메일": "email",
    "전화번호": "phone", "휴대폰": "phone", "상태": "status", "태그": "tags", "리스트": "lists",
}
_LIST_FIELDS = ("tags", "lists")


class ImportFileError(Exception):
    """The file as a whole is unusable (encoding, header, mapping): nothing is imported."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "cp949"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ImportFileError("file", "the file is neither UTF-8 nor CP949 (EUC-KR) text")


@dataclass
class ParsedFile:
    rows: list[tuple[int, ContactFields]] = field(default_factory=list)
    failed: list[RowError] = field(default_factory=list)


def parse(text: str, mapping: dict[str, str] | None = None) -> ParsedFile:
    """Rows of the file as contacts; a row that fails is reported (line, field, why) and left out.
    A later row repeating an earlier row's email is a failure too (which one would win?)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        raise ImportFileError("file", "the file is empty: a header line is needed")
    columns = _columns([h.strip() for h in header], mapping or {})
    parsed, first_line_of = ParsedFile(), {}
    for line, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            parsed.failed.append(RowError(row=line, field=None, message=(
                f"{len(values)} values for {len(header)} columns")))
            continue
        try:
            contact = ContactFields.model_validate(_fields(columns, values))
        except ValidationError as error:
            first = error.errors()[0]
            parsed.failed.append(RowError(row=line, field=str(first["loc"][0]), message=first["msg"]))
            continue
        key = contact.email.lower()
        if key in first_line_of:
            parsed.failed.append(RowError(row=line, field="email", message=(
                f"same email as line {first_line_of[key]}")))
            continue
        first_line_of[key] = line
        parsed.rows.append((line, contact))
    return parsed


def _columns(header: list[str], mapping: dict[str, str]) -> dict[int, str]:
    """Column index -> contact field, from the mapping given, else the known header names."""
    for target in mapping.values():
        if target not in FIELDS:
            raise ImportFileError("mapping", f"unknown field {target!r}; fields: {', '.join(FIELDS)}")
    for column in mapping:
        if column not in header:
            raise ImportFileError("mapping", f"no column {column!r} in the header")
    columns = {i: mapping.get(name) or DEFAULT_HEADERS.get(name) for i, name in enumerate(header)}
    columns = {i: f for i, f in columns.items() if f}
    if "email" not in columns.values():
        raise ImportFileError("mapping", "no column maps to email (name it 'email' or '이메일',"
                                         " or map it)")
    return columns


def _fields(columns: dict[int, str], values: list[str]) -> dict:
    fields: dict = {}
    for index, name in columns.items():
        value = values[index].strip()
        if name in _LIST_FIELDS:
            fields[name] = [v for v in value.replace(",", ";").split(";") if v.strip()]
        elif value:
            fields[name] = value
    return fields


async def import_contacts(
    nc: Client,
    workspace_id: uuid.UUID,
    parsed: ParsedFile,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> ImportReport:
    """Send the parsed rows in chunks; each chunk is upserted in one transaction."""
    totals = {"created": 0, "updated": 0, "unchanged": 0}
    contacts = [contact for _, contact in parsed.rows]
    for start in range(0, len(contacts), CHUNK_ROWS):
        chunk = ImportContacts(workspace_id=workspace_id, rows=contacts[start:start + CHUNK_ROWS])
        reply = await rpc.request(nc, chunk, timeout=120)
        if reply.problem is not None:
            raise rpc.Rejected(reply.problem.status, reply.problem.detail or reply.problem.title)
        for key in totals:
            totals[key] += reply.result[key]
        progress(min(start + CHUNK_ROWS, len(contacts)), len(contacts))
    return ImportReport(**totals, failed=parsed.failed)
