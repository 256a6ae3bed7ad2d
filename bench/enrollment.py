"""Enrollment (issue 6): bulk-enrolling a segment, and rebuilding the enrollment read models.

The issue: "Bulk-enroll a 100,000-contact segment: time until every enrollment is persisted in
the log and visible in the detail view; in the same run, raw PostgreSQL COPY of 100,000
comparable rows. Target: 100k in at most 15 s on this 2-core machine. Also: projection rebuild
speed in events/s over at least 1,000,000 events; target at least 50,000 events/s."

Bulk enrollment: a fresh database; N + 10% contacts in the enrollment read model (and their
ContactCreated events in the log), N of them tagged "webinar", all by COPY; a sequence created
through `EnrollmentCommands.create_sequence`. Timed: `EnrollmentCommands.enroll_segment`
(segment tag=webinar) in this process, exactly as the enrollment service runs it on an
EnrollSegment request (one transaction: N ContactEnrolled appended to N streams with their
outbox rows, and the read model rows written in the same transaction), then until
`enrollment.enrollments` holds N rows of the sequence and the detail view query
(`EnrollmentQueries.get_enrollment`) answers for the last one. The NATS round trip of the
request (one message) is not included. Raw baseline: binary COPY of N rows shaped like
`eventlog.events` (ContactEnrolled-sized JSON, no keys or indexes) in one transaction.
--quick: N = 20,000, with the target scaled to 3 s.

Rebuild: M events (1,000,000; --quick 200,000) of a realistic life of enrollments written into
`eventlog.events` by COPY, in the order the services would append them, block by block of
1,000 contacts: ContactCreated, ContactEnrolled (a bulk enrollment), StepScheduled, StepDue,
then per enrollment EmailSent, EnrollmentStepCompleted, StepScheduled; EmailOpened for a quarter
of them; StepDue of the second step, then EmailSent, EnrollmentStepCompleted,
EnrollmentCompleted. Every envelope's data is built from the contract's fields (the rebuild
decodes and validates each one). Timed: `sequences.projections.rebuild` of the enrollment
projection. Raw baseline: `EventStore.read_all` of the same events as the rebuild reads them
(same batches of 5,000, the data of the types it handles), without applying them (best of a
run before and one after the rebuild).

    python -m bench --only enrollment [--quick]
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import psycopg
from sqlalchemy import text

from bench import common
from bench.common import BENCH_WORKSPACE, Result
from bench.service_common import migrated_database
from contracts.commands import CreateSequence, EnrollSegment, GetEnrollment, Segment
from contracts.events import (
    ContactCreated,
    ContactEnrolled,
    EmailOpened,
    EmailSent,
    EnrollmentCompleted,
    EnrollmentStepCompleted,
    SequenceCreated,
    StepDue,
    StepScheduled,
)
from contracts.values import SendPolicy, Step
from sequences.clock import SystemClock
from sequences.db import create_engine
from sequences.eventlog.store import EventStore
from sequences.projections import rebuild
from services.enrollment.app import MIGRATIONS
from services.enrollment.handlers import EnrollmentCommands
from services.enrollment.projections import PROJECTION
from services.enrollment.queries import EnrollmentQueries

BULK_SECONDS = 15.0  # for 100,000
REBUILD_RATE = 50_000  # events/s
READ_BATCH = 5_000  # rebuild's batch size
TAG = "webinar"

_EVENT_COLUMNS = ("event_id, workspace_id, stream_id, version, type, schema_version, occurred_at,"
                  " correlation_id, causation_id, data")


def _sequence_command() -> CreateSequence:
    return CreateSequence(
        workspace_id=BENCH_WORKSPACE, name="견적 후속", sender_name="이영희", sender_email="younghee@sales.example",
        timezone="Asia/Seoul", send_policy=SendPolicy(mode="send_time", send_time="09:30"),
        steps=[Step(channel="email", wait_days=0, subject="{{고객명}}님, {{회사명}} 견적 건",
                    body="안녕하세요 {{고객명}}님, 보내드린 견적 관련 연락드립니다."),
               Step(channel="email", wait_days=2, body="{{고객명|고객}}님, 혹시 검토해 보셨을까요?")])


def _runtime(url: str) -> SimpleNamespace:
    """What EnrollmentCommands and EnrollmentQueries use of a service's Runtime (they need no
    NATS connection)."""
    clock = SystemClock()
    return SimpleNamespace(name="enrollment", engine=create_engine(url), clock=clock,
                           store=EventStore(clock))


def _contact_data(i: int, contact_id: uuid.UUID) -> dict:
    return {"contact_id": str(contact_id), "name": f"김민수{i}", "company": "한빛상사",
            "job_title": "과장", "owner_name": "이영희", "email": f"customer{i}@customer.example",
            "phone": "010-1234-5678", "status": "lead",
            "tags": [TAG] if i % 11 else ["newsletter"], "lists": ["2026 Q4"]}


# --- bulk enrollment -------------------------------------------------------------------------


def _seed_contacts(url: str, total: int) -> int:
    """`total` contacts in the read model and the log; returns how many carry the tag."""
    now = datetime.now(UTC)
    tagged = 0
    rows = []
    for i in range(total):
        data = _contact_data(i, uuid.uuid4())
        tagged += TAG in data["tags"]
        rows.append(data)
    with psycopg.connect(**common.connect_params(url), autocommit=True) as conn:
        with conn.transaction(), conn.cursor().copy(
                "COPY enrollment.contacts (contact_id, workspace_id, name, company, job_title,"
                " owner_name, email, phone, status, tags, lists, created_at, updated_at)"
                " FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["uuid", "uuid", "text", "text", "text", "text", "text", "text", "text",
                            "text[]", "text[]", "timestamptz", "timestamptz"])
            for i, d in enumerate(rows):
                at = now + timedelta(microseconds=i)
                copy.write_row((uuid.UUID(d["contact_id"]), BENCH_WORKSPACE, d["name"], d["company"],
                                d["job_title"], d["owner_name"], d["email"], d["phone"],
                                d["status"], d["tags"], d["lists"], at, at))
        with conn.transaction(), conn.cursor().copy(
                f"COPY eventlog.events ({_EVENT_COLUMNS}) FROM STDIN") as copy:
            for d in rows:
                copy.write_row((uuid.uuid4(), BENCH_WORKSPACE, f"contact-{d['contact_id']}", 1, "ContactCreated",
                                1, now, uuid.uuid4(), None, json.dumps(d, ensure_ascii=False)))
        conn.execute("ANALYZE")
    return tagged


_BARE = """
CREATE TABLE bare_events (
    stream_id text, version integer, event_id uuid, type text, schema_version integer,
    occurred_at timestamptz, recorded_at timestamptz DEFAULT now(), correlation_id uuid,
    causation_id uuid, traceparent text, tracestate text, data jsonb
)
"""


def _raw_copy(url: str, n: int) -> float:
    """Seconds to COPY n ContactEnrolled-shaped rows into a bare table like eventlog.events."""
    sequence_id, now = uuid.uuid4(), datetime.now(UTC)
    rows = [(uuid.uuid4(), uuid.uuid4(), i) for i in range(n)]
    with psycopg.connect(**common.connect_params(url), autocommit=True) as conn:
        conn.execute(_BARE)
        common.checkpoint(url)
        start = time.perf_counter()
        with conn.transaction(), conn.cursor().copy(
                "COPY bare_events (event_id, stream_id, version, type, schema_version,"
                " occurred_at, correlation_id, causation_id, traceparent, tracestate, data)"
                " FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["uuid", "text", "int4", "text", "int4", "timestamptz", "uuid",
                            "uuid", "text", "text", "jsonb"])
            correlation = uuid.uuid4()
            for enrollment_id, contact_id, i in rows:
                copy.write_row((uuid.uuid4(), f"enrollment-{enrollment_id}", 1,
                                "ContactEnrolled", 1, now, correlation, None, None, None,
                                {"enrollment_id": str(enrollment_id),
                                 "sequence_id": str(sequence_id), "contact_id": str(contact_id),
                                 "enrolled_at": now.isoformat(),
                                 "email": f"customer{i}@customer.example", "attempt": 1}))
        return time.perf_counter() - start


async def _bulk_enroll(n: int, quick: bool) -> list[Result]:
    total = n + n // 10
    common.progress(f"enrollment: bulk enroll, fresh database, {total:,} contacts"
                    f" ({n:,} tagged {TAG!r})")
    url = await migrated_database("enrollment", MIGRATIONS)
    tagged = await asyncio.to_thread(_seed_contacts, url, round(n * 11 / 10))
    runtime = _runtime(url)
    try:
        commands, queries = EnrollmentCommands(runtime), EnrollmentQueries(runtime)
        sequence_id = (await commands.create_sequence(_sequence_command())).id
        common.checkpoint(url)
        common.progress(f"enrollment: enroll_segment(tag={TAG!r}) of {tagged:,} contacts")
        start = time.perf_counter()
        answer = await commands.enroll_segment(
            EnrollSegment(workspace_id=BENCH_WORKSPACE, sequence_id=sequence_id,
                          segment=Segment(tag=TAG)))
        answered = time.perf_counter() - start
        async with runtime.engine.connect() as conn:
            while (await conn.execute(
                    text("SELECT count(*) FROM enrollment.enrollments WHERE sequence_id = :s"),
                    {"s": sequence_id})).scalar() < tagged:
                await asyncio.sleep(0.01)
            last = (await conn.execute(text(
                "SELECT data->>'enrollment_id' FROM eventlog.events"
                " WHERE type = 'ContactEnrolled' ORDER BY position DESC LIMIT 1"))).scalar()
        view = await queries.get_enrollment(GetEnrollment(workspace_id=BENCH_WORKSPACE,
                                                          enrollment_id=uuid.UUID(last)))
        seconds = time.perf_counter() - start
        async with runtime.engine.connect() as conn:
            logged = (await conn.execute(text(
                "SELECT count(*) FROM eventlog.events WHERE type = 'ContactEnrolled'"))).scalar()
    finally:
        await runtime.engine.dispose()
    if answer.enrolled != tagged or logged != tagged or view.status != "active":
        raise RuntimeError(f"bulk enrollment incomplete: {answer}, {logged} in the log")
    common.progress(f"  enrolled {tagged:,} in {seconds:.2f} s ({tagged / seconds:,.0f}/s)")
    copy_url = common.fresh_database("enrollment_copy")
    raw = await asyncio.to_thread(_raw_copy, copy_url, tagged)
    common.progress(f"  raw COPY of {tagged:,} rows: {raw:.2f} s ({tagged / raw:,.0f} rows/s)")
    target = BULK_SECONDS * tagged / 100_000
    row = Result(
        f"bulk-enroll a {tagged:,}-contact segment: in the log and the detail view",
        seconds, "s", raw, f"raw COPY of {tagged:,} rows", seconds / raw,
        f"<= {target:g} s" + (" (15 s scaled)" if quick else ""), seconds <= target,
        details={"enrolled": tagged, "contacts": round(n * 11 / 10),
                 "command_returned_s": round(answered, 3), "per_s": round(tagged / seconds),
                 "raw_copy_s": round(raw, 3), "raw_copy_per_s": round(tagged / raw)})
    return [row]


# --- rebuild ---------------------------------------------------------------------------------


def _events(total: int):
    """Rows for eventlog.events, about `total` of them, in the order the services append
    them; yields (event_id, workspace_id, stream_id, version, type, schema_version, occurred_at,
    correlation_id, causation_id, data-json)."""
    command = _sequence_command()
    sequences = []
    for k in range(10):
        sequence = SequenceCreated(sequence_id=uuid.uuid4(),
                                   **command.model_dump(exclude={"workspace_id"}))
        sequences.append(sequence)
    t0 = datetime(2026, 11, 2, 0, 30, tzinfo=UTC)
    clock = iter(t0 + timedelta(milliseconds=i) for i in range(10 * total))

    def row(event_type: type, stream: str, version: int, data: dict, correlation: uuid.UUID):
        return (uuid.uuid4(), BENCH_WORKSPACE, stream, version, event_type.__name__, 1, next(clock), correlation,
                None, json.dumps(data, ensure_ascii=False))

    for sequence in sequences:
        yield row(SequenceCreated, sequence.stream_id(), 1, sequence.model_dump(mode="json"),
                  uuid.uuid4())
    per_contact = 11.25
    contacts = int((total - len(sequences)) / per_contact)
    block = 1000
    for start in range(0, contacts, block):
        size = min(block, contacts - start)
        sequence = sequences[(start // block) % len(sequences)]
        seq_id = str(sequence.sequence_id)
        step0, step1 = (str(s.step_id) for s in sequence.steps)
        people = []
        correlation = uuid.uuid4()
        for i in range(start, start + size):
            contact_id, enrollment_id = uuid.uuid4(), uuid.uuid4()
            people.append((str(contact_id), str(enrollment_id), f"customer{i}@customer.example",
                           uuid.uuid4(), i % 4 == 0))
            yield row(ContactCreated, f"contact-{contact_id}", 1,
                      _contact_data(i, contact_id), correlation)
        at = next(clock).isoformat()
        for contact_id, enrollment_id, email, correlation, _ in people:
            yield row(ContactEnrolled, f"enrollment-{enrollment_id}", 1,
                      {"enrollment_id": enrollment_id, "sequence_id": seq_id,
                       "contact_id": contact_id, "enrolled_at": at, "email": email,
                       "attempt": 1}, correlation)
        for step_index, step_id, last in ((0, step0, False), (1, step1, True)):
            due = next(clock).isoformat()
            if step_index == 0:
                for _, enrollment_id, _, correlation, _ in people:
                    yield row(StepScheduled, f"schedule-{enrollment_id}", 1,
                              {"enrollment_id": enrollment_id, "step_id": step_id,
                               "step_index": 0, "due_at": due, "held": False, "reason": None},
                              correlation)
            for contact_id, enrollment_id, _, correlation, _ in people:
                yield row(StepDue, f"schedule-{enrollment_id}", 2 + 2 * step_index,
                          {"enrollment_id": enrollment_id, "sequence_id": seq_id,
                           "contact_id": contact_id, "step_id": step_id,
                           "step_index": step_index, "channel": "email", "due_at": due},
                          correlation)
            for contact_id, enrollment_id, email, correlation, opened in people:
                sent = next(clock).isoformat()
                message_id = f"<{uuid.uuid4()}@sales.example>"
                delivery_version = 1 if step_index == 0 else (3 if opened else 2)
                yield row(EmailSent, f"delivery-{enrollment_id}", delivery_version,
                          {"enrollment_id": enrollment_id, "sequence_id": seq_id,
                           "contact_id": contact_id, "step_id": step_id,
                           "step_index": step_index, "message_id": message_id,
                           "recipient": email, "subject": "김민수님, 한빛상사 견적 건",
                           "sent_at": sent, "in_reply_to": None, "references": []},
                          correlation)
                yield row(EnrollmentStepCompleted, f"enrollment-{enrollment_id}",
                          2 + step_index,
                          {"enrollment_id": enrollment_id, "step_id": step_id,
                           "step_index": step_index, "channel": "email", "completed_at": sent,
                           "message_id": message_id}, correlation)
                if not last:
                    yield row(StepScheduled, f"schedule-{enrollment_id}", 3,
                              {"enrollment_id": enrollment_id, "step_id": step1,
                               "step_index": 1, "due_at": sent, "held": False, "reason": None},
                              correlation)
                else:
                    yield row(EnrollmentCompleted, f"enrollment-{enrollment_id}", 4,
                              {"enrollment_id": enrollment_id, "completed_at": sent},
                              correlation)
            if step_index == 0:
                for _, enrollment_id, _, correlation, opened in people:
                    if opened:
                        yield row(EmailOpened, f"delivery-{enrollment_id}", 2,
                                  {"enrollment_id": enrollment_id, "step_id": step0,
                                   "message_id": f"<{enrollment_id}@sales.example>",
                                   "opened_at": next(clock).isoformat()}, correlation)


def _write_events(url: str, total: int) -> tuple[int, dict]:
    """Write the log; returns how many events and its mix (count per type, and the mean
    length of runs of one type, which decides how much the batch handlers can batch)."""
    ticker = common.Ticker("writing events (COPY)", total)
    written, runs, previous = 0, 0, None
    types: dict[str, int] = {}
    with psycopg.connect(**common.connect_params(url), autocommit=True) as conn:
        with conn.transaction(), conn.cursor().copy(
                f"COPY eventlog.events ({_EVENT_COLUMNS}) FROM STDIN") as copy:
            for values in _events(total):
                copy.write_row(values)
                written += 1
                types[values[3]] = types.get(values[3], 0) + 1
                runs += values[3] != previous
                previous = values[3]
                if written % 10_000 == 0:
                    ticker.tick(written)
        conn.execute("VACUUM ANALYZE eventlog.events")
    return written, {"types": types, "mean_run_of_one_type": round(written / max(1, runs), 2)}


async def _read_all(engine, store, subscription) -> tuple[int, float]:
    """Read the log as the rebuild reads it, applying nothing."""
    count = 0
    start = time.perf_counter()
    async with engine.connect() as conn:
        async for batch in store.read_all(conn, subscription.categories, READ_BATCH,
                                          types_with_data=subscription.handled_types):
            count += len(batch)
    return count, time.perf_counter() - start


async def _rebuild(total: int) -> list[Result]:
    common.progress(f"enrollment: rebuild, fresh database, writing {total:,} events")
    url = await migrated_database("rebuild", MIGRATIONS)
    written, mix = await asyncio.to_thread(_write_events, url, total)
    engine, store = create_engine(url), EventStore(SystemClock())
    subscription = PROJECTION.subscription
    try:
        common.checkpoint(url)
        common.progress(f"enrollment: raw read_all of {written:,} events")
        read_before, read_s_before = await _read_all(engine, store, subscription)
        common.progress(f"  {read_before / read_s_before:,.0f} events/s")
        common.checkpoint(url)
        common.progress(f"enrollment: rebuild of the enrollment projection from {written:,}"
                        " events")
        ticker = common.Ticker("rebuild", written)
        start = time.perf_counter()
        replayed = await rebuild(engine, store, PROJECTION, progress=ticker.tick)
        seconds = time.perf_counter() - start
        common.progress(f"  {replayed:,} events in {seconds:.1f} s"
                        f" = {replayed / seconds:,.0f} events/s")
        common.checkpoint(url)
        read_after, read_s_after = await _read_all(engine, store, subscription)
        async with engine.connect() as conn:
            done = (await conn.execute(text(
                "SELECT count(*) FROM enrollment.enrollments WHERE status = 'done'"
                " AND sends = 2"))).scalar()
            opens = (await conn.execute(text(
                "SELECT coalesce(sum(opens), 0) FROM enrollment.enrollments"))).scalar()
    finally:
        await engine.dispose()
    if replayed != written or read_before != written:
        raise RuntimeError(f"replayed {replayed:,}, read {read_before:,} of {written:,} events")
    read_rate = max(read_before / read_s_before, read_after / read_s_after)
    rate = replayed / seconds
    return [Result(
        f"projection rebuild (enrollment read models) over {replayed:,} events",
        rate, "events/s", read_rate, "read_all without applying", rate / read_rate,
        f">= {REBUILD_RATE:,} events/s", rate >= REBUILD_RATE,
        details={"events": replayed, "seconds": round(seconds, 2),
                 "read_all_per_s": [round(read_before / read_s_before),
                                    round(read_after / read_s_after)],
                 "enrollments_done": done, "opens": opens, "log": mix})]


async def run(quick: bool) -> list[Result]:
    results = await _bulk_enroll(20_000 if quick else 100_000, quick)
    results += await _rebuild(50_000 if quick else 1_000_000)
    return results
