"""CSV import of contacts: decode (UTF-8, UTF-8 with BOM from Excel, CP949 from Korean Excel),
map columns to fields, validate each row, and send the good rows to the enrollment service in
chunks. Used alike by `POST /v1/contacts/import` and `sequences contacts import`."""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import uuid
from typing import Callable, Iterator

from nats.aio.client import Client
from pydantic import ValidationError

from contracts.commands import ContactFields, ImportContacts
from contracts.texts import Text, said, validation_text
from contracts.views import ImportReport, RowError
from sequences.i18n import N_
from sequences.messaging import rpc
from services.enrollment.contact_timezone import infer_timezone

MAX_IMPORT_BYTES = 50 * 1024 * 1024
CHUNK_ROWS = 2000  # rows per ImportContacts command (one transaction each; well under NATS's 1 MB)

FIELDS = tuple(ContactFields.model_fields)
# columns read only to infer an empty timezone (with the phone number), not stored
HINTS = ("country", "region")
TARGETS = FIELDS + HINTS  # what a column may be mapped to
# header names understood without a mapping (in any case): the field names, and the Korean ones
# sales teams use
DEFAULT_HEADERS = {
    **{name: name for name in TARGETS},
    "고객명": "name", "이름": "name", "회사명": "company", "회사": "company", "직함": "job_title",
    "담당자명": "owner_name", "담당자": "owner_name", "이메일": "email", "메일": "email",
    "전화번호": "phone", "휴대폰": "phone", "상태": "status", "태그": "tags", "리스트": "lists",
    "time zone": "timezone", "time_zone": "timezone", "tz": "timezone", "시간대": "timezone",
    "타임존": "timezone", "국가": "country", "나라": "country", "country code": "country",
    "state": "region", "province": "region", "지역": "region",
}
_LIST_FIELDS = ("tags", "lists")
EMPTY_FILE = N_("the file is empty: a header line is needed")


class ImportFileError(Exception):
    """The file as a whole is unusable (encoding, header, mapping): nothing is imported.
    `message % values` is the English text; `message` is in the catalogs, so the web app
    shows it in the reader's language."""

    def __init__(self, field: str, message: str, **values):
        super().__init__(message % values if values else message)
        self.field = field
        self.message = message
        self.values = values


_ENCODINGS = ("utf-8-sig", "cp949")  # Excel's UTF-8 (with or without its BOM), Korean Excel's
_BINARY = N_("this is not a CSV file: it holds binary data (save a spreadsheet as CSV first)")
_UNKNOWN_ENCODING = N_("the file is neither UTF-8 nor CP949 (EUC-KR) text")


def decode(data: bytes) -> str:
    _refuse_binary(data)
    for encoding in _ENCODINGS:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ImportFileError("file", _UNKNOWN_ENCODING)


def encoding_of(data: bytes) -> str:
    """The encoding the whole file decodes in (as `decode` finds it), checked a megabyte at a
    time without keeping the text."""
    _refuse_binary(data)
    view = memoryview(data)
    for encoding in _ENCODINGS:
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            for start in range(0, len(view), _MEGABYTE):
                decoder.decode(view[start:start + _MEGABYTE])
            decoder.decode(b"", final=True)
            return encoding
        except UnicodeDecodeError:
            continue
    raise ImportFileError("file", _UNKNOWN_ENCODING)


_MEGABYTE = 2**20


def _refuse_binary(data: bytes) -> None:
    if b"\x00" in data[:65536]:  # text files have no NUL bytes; images, zips, .xlsx do
        raise ImportFileError("file", _BINARY)


class ParsedFile:
    """A file's rows, validated as they are read: `chunks()` yields the good ones a chunk at a
    time (so a 100,000-row file is never held as 100,000 contacts), `failed` collects the rest
    (line, field, why). The header is checked at once: an unusable file sends nothing.
    A later row repeating an earlier row's email is a failure too (which one would win?)."""

    def __init__(self, data: bytes, mapping: dict[str, str] | None = None):
        # decoded as it is read: the file's text is never held whole (for 100,000 Korean rows
        # it and an io.StringIO of it were 30 MB, most of the gateway's growth in an import)
        self._reader = csv.reader(io.TextIOWrapper(io.BytesIO(data), encoding_of(data),
                                                   newline=""))
        header = next(self._reader, None)
        if not header:
            raise ImportFileError("file", EMPTY_FILE)
        self._width = len(header)
        self._columns = _columns([h.strip() for h in header], mapping or {})
        self.failed: list[RowError] = []
        self.lines_read = 1
        # for progress: lines after the header (a quoted field may span lines: an estimate)
        # (a line feed is never part of a character in UTF-8 nor in CP949)
        self.lines = max(data.count(b"\n") - 1, 0) + (not data.endswith(b"\n"))

    def chunks(self, size: int = CHUNK_ROWS) -> Iterator[list[ContactFields]]:
        chunk: list[ContactFields] = []
        first_line_of: dict[str, int] = {}
        for line, values in enumerate(self._reader, start=2):
            self.lines_read = line
            contact = self._contact(line, values, first_line_of)
            if contact is not None:
                chunk.append(contact)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _contact(self, line: int, values: list[str],
                 first_line_of: dict[str, int]) -> ContactFields | None:
        if not any(v.strip() for v in values):
            return None
        if len(values) != self._width:
            return self._fail(line, None, f"{len(values)} values for {self._width} columns",
                              said(N_("%(values)s values for %(columns)s columns."),
                                   values=len(values), columns=self._width))
        fields = _fields(self._columns, values)
        # a pure, cached function: under 1 us a row for a country column, more only for
        # numbers of calling codes with several zones (`python -m bench --only contact_timezone`)
        country, region = fields.pop("country", ""), fields.pop("region", "")
        if "timezone" not in fields and (zone := infer_timezone(country, region,
                                                                 fields.get("phone", ""))):
            fields["timezone"] = zone
        try:
            contact = ContactFields.model_validate(fields)
        except ValidationError as error:
            first = error.errors()[0]
            return self._fail(line, str(first["loc"][0]), first["msg"], validation_text(first))
        key = contact.email.lower()
        if key in first_line_of:
            return self._fail(line, "email", f"same email as line {first_line_of[key]}",
                              said(N_("Same email as line %(line)s."), line=first_line_of[key]))
        first_line_of[key] = line
        return contact

    def _fail(self, line: int, field_: str | None, message: str, text: Text) -> None:
        """`message`: the English the API has always answered; `text`: for the web app."""
        self.failed.append(RowError(row=line, field=field_, message=message, text=text))
        return None


def parse(data: bytes | str, mapping: dict[str, str] | None = None) -> ParsedFile:
    """The file as uploaded (or a text, read as UTF-8), its header checked at once."""
    return ParsedFile(data.encode() if isinstance(data, str) else data, mapping)


def _columns(header: list[str], mapping: dict[str, str]) -> dict[int, str]:
    """Column index -> contact field, from the mapping given (an empty field: the column is
    not imported), else the known header names."""
    for target in mapping.values():
        if target and target not in TARGETS:
            raise ImportFileError("mapping", N_("unknown field %(target)r; fields: %(fields)s"),
                                  target=target, fields=", ".join(TARGETS))
    for column in mapping:
        if column not in header:
            raise ImportFileError("mapping", N_("no column %(column)r in the header"),
                                  column=column)
    columns = {i: mapping[name] if name in mapping else field_for_header(name)
               for i, name in enumerate(header)}
    columns = {i: f for i, f in columns.items() if f}
    if "email" not in columns.values():
        raise ImportFileError("mapping", N_("no column maps to email (name it 'email' or"
                                            " '이메일', or map it)"))
    return columns


def field_for_header(name: str) -> str | None:
    """The field a column of this name fills when no mapping says otherwise."""
    return DEFAULT_HEADERS.get(name) or DEFAULT_HEADERS.get(name.casefold())


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
    """Send the rows a chunk at a time as they are read; each chunk is upserted in one
    transaction. `progress(lines read, lines in the file)` after each.

    The next chunk is read and validated while the service writes the one before: a chunk is
    sent before the answer to the previous one is awaited, so the service always has the next
    one waiting (it answers one command of a kind at a time, in order) and no more than two
    chunks are held. A refused chunk stops the import with its problem; the chunk sent after it
    may have been written too (every chunk is its own transaction, as before: repeating the
    import is safe, it upserts by email)."""
    totals = {"created": 0, "updated": 0, "unchanged": 0}

    async def counted(answer: asyncio.Future) -> None:
        reply = await answer
        if reply.problem is not None:
            raise rpc.Rejected(reply.problem.status, reply.problem.detail or reply.problem.title)
        for key in totals:
            totals[key] += reply.result[key]

    in_flight: asyncio.Future | None = None
    try:
        for rows in parsed.chunks():
            previous, in_flight = in_flight, asyncio.ensure_future(rpc.request(
                nc, ImportContacts(workspace_id=workspace_id, rows=rows), timeout=120))
            if previous is not None:
                await counted(previous)
                progress(parsed.lines_read - 1, max(parsed.lines, parsed.lines_read - 1))
        if in_flight is not None:
            await counted(in_flight)
    finally:
        if in_flight is not None and not in_flight.done():
            in_flight.cancel()
    progress(parsed.lines_read - 1, parsed.lines_read - 1)
    return ImportReport(**totals, failed=parsed.failed)
