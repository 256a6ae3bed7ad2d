"""The web app's CSV imports, as work any gateway replica can follow.

An import is two steps (upload, then confirm the column mapping) and then runs for seconds to
minutes, so nothing of it lives in one process: the uploaded file waits in a NATS object store
(it expires after `FILE_SECONDS`; re-running with another mapping reads it again), and each
import's record (file name, header, state, progress, report) is a key of a NATS key-value
bucket (expiring after `RECORD_SECONDS`). Keys are `<workspace>.<random id>`: another
workspace's id is as unknown as a made-up one.

The import itself runs as a task of the replica that was asked to start it; it writes its
progress to the record every `PROGRESS_EVERY` seconds, so a page polling any replica sees it.
If that replica dies mid-way the record stops moving: `stalled` says so (the rows sent so far
are imported, each chunk in one transaction; importing the file again is safe, it upserts)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import secrets
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from nats.aio.client import Client
from nats.js.api import KeyValueConfig, ObjectStoreConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.errors import NotFoundError, ObjectNotFoundError

from contracts.subjects import IMPORT_FILES_BUCKET, IMPORT_PROGRESS_BUCKET
from contracts.views import RowError
from sequences.messaging import rpc
from services.enrollment import contact_import

log = logging.getLogger(__name__)

FILE_SECONDS = 3600
RECORD_SECONDS = 24 * 3600
PROGRESS_EVERY = 0.5
STALLED_AFTER = timedelta(minutes=2)
REPORTED_FAILURES = 1000  # rows listed in the report (a record stays well under NATS's 1 MB)
_running: set[asyncio.Task] = set()  # the imports this process runs (kept from the collector)


@dataclass
class ImportRecord:
    key: str
    filename: str
    size: int
    header: list[str]
    state: str = "uploaded"  # uploaded | running | done | failed
    mapping: dict[str, str] = field(default_factory=dict)
    done: int = 0
    total: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed_count: int = 0
    failed: list[dict] = field(default_factory=list)
    problem: str | None = None  # why a failed import stopped (English, from the service)
    updated_at: str = ""
    revision: int = 0  # of the KV entry this was read from

    @property
    def import_id(self) -> str:
        return self.key.partition(".")[2]

    @property
    def failures(self) -> list[RowError]:
        return [RowError(**f) for f in self.failed]

    @property
    def stalled(self) -> bool:
        return self.state == "running" and (
            datetime.now(UTC) - datetime.fromisoformat(self.updated_at) > STALLED_AFTER)

    @property
    def percent(self) -> int:
        return min(100, 100 * self.done // self.total) if self.total else 0

    def encoded(self) -> bytes:
        self.updated_at = datetime.now(UTC).isoformat()
        return json.dumps({k: v for k, v in asdict(self).items() if k != "revision"},
                          ensure_ascii=False).encode()


async def _records(nc: Client):
    js = nc.jetstream()
    try:
        return await js.key_value(IMPORT_PROGRESS_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(bucket=IMPORT_PROGRESS_BUCKET, history=1, ttl=RECORD_SECONDS))


async def _files(nc: Client):
    js = nc.jetstream()
    try:
        return await js.object_store(IMPORT_FILES_BUCKET)
    except (BucketNotFoundError, NotFoundError):
        return await js.create_object_store(
            IMPORT_FILES_BUCKET, ObjectStoreConfig(ttl=FILE_SECONDS))


def header_of(text: str) -> list[str]:
    """The first line's column names (read from the start of the text only)."""
    header = next(csv.reader(io.StringIO(text[:1 << 20], newline="")), None)
    if not header or not any(h.strip() for h in header):
        raise contact_import.ImportFileError("file", contact_import.EMPTY_FILE)
    return [h.strip() for h in header]


def suggested_mapping(header: list[str]) -> dict[str, str]:
    """Column -> field as the import understands it without a mapping ("" : not imported)."""
    return {column: contact_import.field_for_header(column) or "" for column in header}


async def keep_upload(nc: Client, workspace_id: uuid.UUID, filename: str, data: bytes,
                      header: list[str]) -> ImportRecord:
    record = ImportRecord(key=f"{workspace_id}.{secrets.token_urlsafe(16)}",
                          filename=filename[:200], size=len(data), header=header,
                          mapping=suggested_mapping(header))
    await (await _files(nc)).put(record.key, data)
    record.revision = await (await _records(nc)).create(record.key, record.encoded())
    return record


async def record_of(nc: Client, workspace_id: uuid.UUID, import_id: str) -> ImportRecord | None:
    if not import_id.replace("-", "").replace("_", "").isalnum() or len(import_id) > 40:
        return None
    try:
        entry = await (await _records(nc)).get(f"{workspace_id}.{import_id}")
    except (KeyNotFoundError, NotFoundError):
        return None
    if entry.value is None:
        return None
    return ImportRecord(**json.loads(entry.value), revision=entry.revision)


async def file_of(nc: Client, record: ImportRecord) -> bytes | None:
    """The uploaded file, while it is kept (None after `FILE_SECONDS`)."""
    try:
        return (await (await _files(nc)).get(record.key)).data
    except (ObjectNotFoundError, NotFoundError):
        return None


async def start(nc: Client, workspace_id: uuid.UUID, record: ImportRecord,
                parsed: contact_import.ParsedFile, mapping: dict[str, str]) -> bool:
    """Mark the record running and import in the background; False if it is running already
    (a second click, or another replica that was asked first)."""
    if record.state == "running" and not record.stalled:
        return False
    record.state, record.mapping, record.problem = "running", mapping, None
    record.done, record.total = 0, parsed.lines
    record.created = record.updated = record.unchanged = record.failed_count = 0
    record.failed = []
    kv = await _records(nc)
    try:
        record.revision = await kv.update(record.key, record.encoded(), last=record.revision)
    except KeyWrongLastSequenceError:
        return False
    task = asyncio.create_task(_run(nc, kv, workspace_id, record, parsed))
    _running.add(task)
    task.add_done_callback(_running.discard)
    return True


async def _run(nc: Client, kv, workspace_id: uuid.UUID, record: ImportRecord,
               parsed: contact_import.ParsedFile) -> None:
    seen = {"done": 0, "total": record.total}

    def progress(done: int, total: int) -> None:
        seen.update(done=done, total=total)

    async def write_progress() -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            if (seen["done"], seen["total"]) != (record.done, record.total):
                record.done, record.total = seen["done"], seen["total"]
                await kv.put(record.key, record.encoded())

    writer = asyncio.create_task(write_progress())
    try:
        report = await contact_import.import_contacts(nc, workspace_id, parsed, progress)
    except rpc.Rejected as rejected:
        record.state, record.problem = "failed", rejected.problem.detail
    except Exception as error:  # noqa: BLE001 (the record must say it ended)
        log.exception("web import %s failed", record.key)
        record.state, record.problem = "failed", str(error) or type(error).__name__
    else:
        record.state = "done"
        record.created, record.updated, record.unchanged = (
            report.created, report.updated, report.unchanged)
        record.failed_count = len(report.failed)
        record.failed = [f.model_dump() for f in report.failed[:REPORTED_FAILURES]]
    finally:
        writer.cancel()
    record.done, record.total = seen["done"], max(seen["total"], seen["done"])
    try:
        await kv.put(record.key, record.encoded())
    except Exception:  # noqa: BLE001
        log.exception("web import %s: its record could not be written", record.key)
