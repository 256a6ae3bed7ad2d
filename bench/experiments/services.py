"""Experiments behind the suggestions for the scheduler, mailer and projection rebuild: the same
benchmarks with one setting changed at a time (by environment, or by patching a default in the
service process started here, never by editing the services), and microbenchmarks of single
hot spots. Not in the registry; each prints its own table.

    python -m bench.experiments.services mailer [--n 3000]
    python -m bench.experiments.services scheduler [--n 50000]
    python -m bench.experiments.services moved          # apply_in's `moved` list, per batch
    python -m bench.experiments.services message        # building + flattening one email
    python -m bench.experiments.services statements     # client cost of one SQL round trip
    python -m bench.experiments.services enrollment     # bulk + rebuild, `moved` made linear
    python -m bench.experiments.services read           # reading the log for a rebuild, by path
    python -m bench.experiments.services round-trips    # SQL statements + SMTP commands per email

`service NAME [--concurrency C] [--fetch F] [--pool P] [--smtp-pool S] [--fire-batch B]` runs a
service with patched defaults; the experiments start it that way.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import timeit
import uuid
from pathlib import Path

from bench import common


# --- a service with patched defaults -----------------------------------------------------------


def _run_patched(args) -> None:
    import sequences.bootstrap as bootstrap
    import sequences.db as db
    from sequences.messaging import consumer
    from sequences.services import service_module

    if args.concurrency or args.fetch:
        original = consumer.EventConsumer.__init__

        def init(self, *a, **kw):
            if args.concurrency:
                kw["concurrency"] = args.concurrency
            if args.fetch:
                kw["batch_size"] = args.fetch
            original(self, *a, **kw)

        consumer.EventConsumer.__init__ = init
    if args.pool:
        make = db.create_engine
        bootstrap.create_engine = lambda url, pool_size=10: make(url, pool_size=args.pool)
    if args.smtp_pool:
        from services.mailer import adapters

        sender_init = adapters.SmtpSender.__init__
        adapters.SmtpSender.__init__ = lambda self, settings, pool_size=8, timeout=30.0: \
            sender_init(self, settings, args.smtp_pool, timeout)
    if args.fire_batch:
        from services.scheduler import handlers

        handlers_init = handlers.SchedulerHandlers.__init__
        handlers.SchedulerHandlers.__init__ = lambda self, runtime, batch_size=500: \
            handlers_init(self, runtime, args.fire_batch)
    if args.count_to:
        _count_round_trips(args.count_to)
    service_module(args.name).main()


def _count_round_trips(path: str) -> None:
    """Count what the process sends: SQL statements by their first words, commits, SMTP
    commands; written as JSON to `path` when the service stops."""
    import atexit
    import collections
    import json
    import re

    import aiosmtplib
    import psycopg

    counts: collections.Counter = collections.Counter()
    execute, commit = psycopg.AsyncCursor.execute, psycopg.AsyncConnection.commit

    async def counted_execute(self, query, *a, **kw):
        sql = query.decode() if isinstance(query, bytes) else str(query)
        counts["sql: " + re.sub(r"\s+", " ", sql).strip()[:70]] += 1
        counts["sql statements"] += 1
        return await execute(self, query, *a, **kw)

    async def counted_commit(self):
        counts["sql commits"] += 1
        return await commit(self)

    command = aiosmtplib.SMTP.execute_command

    async def counted_command(self, *a, **kw):
        counts["smtp commands"] += 1
        return await command(self, *a, **kw)

    psycopg.AsyncCursor.execute = counted_execute
    psycopg.AsyncConnection.commit = counted_commit
    aiosmtplib.SMTP.execute_command = counted_command
    atexit.register(lambda: Path(path).write_text(json.dumps(counts, indent=1)))


def _patched(name: str, **settings) -> list[str] | None:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items() if v]
    return ["bench.experiments.services", "service", name, *flags] if flags else None


# --- mailer ------------------------------------------------------------------------------------


MAILER_VARIANTS = [
    ("as configured (8 handlers, pool 10+10, 8 SMTP)", {}, {}),
    ("OTEL_SDK_DISABLED=true (no spans)", {"OTEL_SDK_DISABLED": "true"}, {}),
    ("32 concurrent handlers, pool 40+40", {}, {"concurrency": 32, "pool": 40}),
    ("32 handlers, pool 40+40, 16 SMTP connections", {},
     {"concurrency": 32, "pool": 40, "smtp_pool": 16}),
]


async def _mailer(args) -> None:
    from bench import mailer
    from bench.service_common import nats_server

    rows = []
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as root, \
            tempfile.TemporaryDirectory() as logs, nats_server("mailer") as server:
        capture = mailer.Capture(Path(root), Path(logs))
        capture.start()
        try:
            for repeat in range(args.repeat):
                for label, env, patch in MAILER_VARIANTS:
                    import os
                    saved = {k: os.environ.get(k) for k in env}
                    os.environ.update(env)
                    try:
                        r = await mailer._end_to_end(label, args.n, server.url, capture,
                                                     Path(logs), verify=True,
                                                     module_args=_patched("mailer", **patch))
                    finally:
                        for k, v in saved.items():
                            if v is None:
                                os.environ.pop(k, None)
                            else:
                                os.environ[k] = v
                    rows.append((label, r))
        finally:
            capture.stop()
    print(f"\nmailer, {args.n:,} emails per run")
    print(f"{'variant':52} {'emails/s':>9} {'mailer ms/email':>16} {'pg ms/email':>12}"
          f" {'capture ms/email':>17} {'others cores':>13}")
    for label, r in rows:
        n = r["emails"]
        print(f"{label:52} {r['per_s']:9.0f} {1000 * r['mailer_cpu_s'] / n:16.2f}"
              f" {1000 * r.get('postgres_cpu_s', 0) / n:12.2f}"
              f" {1000 * r['capture_cpu_s'] / n:17.2f} {r.get('others_cores', 0):13.2f}")


# --- scheduler ---------------------------------------------------------------------------------


SCHEDULER_VARIANTS = [
    ("unthrottled (SCHEDULER_MAX_RATE lifted)", {}, {}),
    ("unthrottled, OTEL_SDK_DISABLED=true", {"OTEL_SDK_DISABLED": "true"}, {}),
    ("unthrottled, firing batch 2000 (not 500)", {}, {"fire_batch": 2000}),
    ("unthrottled, no spans, batch 2000", {"OTEL_SDK_DISABLED": "true"}, {"fire_batch": 2000}),
]


async def _scheduler(args) -> None:
    from bench import scheduler
    from bench.service_common import nats_server

    rows = []
    with tempfile.TemporaryDirectory() as logs, nats_server("scheduler") as server:
        for repeat in range(args.repeat):
            for label, env, patch in SCHEDULER_VARIANTS:
                run = await scheduler._scenario(
                    label, server, Path(logs), args.n, 0.0,
                    {"SCHEDULER_MAX_RATE": "1000000", **env},
                    module_args=_patched("scheduler", **patch))
                rows.append((label, run))
    print(f"\nscheduler, {args.n:,} steps due at one instant")
    print(f"{'variant':44} {'all published s':>16} {'steps/s':>8} {'sched ms/1k':>12}"
          f" {'pg ms/1k':>9} {'others cores':>13}")
    for label, run in rows:
        cpu = run.cpu_split
        print(f"{label:44} {run.all_published_after_start:16.1f}"
              f" {run.n / run.all_published_after_start:8.0f}"
              f" {1e6 * cpu.get('scheduler_cpu_s', 0) / run.n:12.0f}"
              f" {1e6 * cpu.get('postgres_cpu_s', 0) / run.n:9.0f}"
              f" {cpu.get('others_cores', 0):13.2f}")


# --- microbenchmarks ---------------------------------------------------------------------------


def _moved(args) -> None:
    """apply_in's `moved = [s for s in streams if any(e.stream_id == s for e in due)]` against a
    set, for one rebuild batch of 5,000 events (the mix of the enrollment benchmark's log)."""
    from bench.enrollment import _events
    from contracts.base import EventEnvelope

    rows = list(_events(20_000))[:5000]
    due = [EventEnvelope(event_id=r[0], stream_id=r[1], version=r[2], type=r[3],
                         schema_version=r[4], occurred_at=r[5], correlation_id=r[6],
                         causation_id=r[7], data={}) for r in rows]
    streams = sorted({e.stream_id for e in due})

    def quadratic():
        return [s for s in streams if any(e.stream_id == s for e in due)]

    def linear():
        touched = {e.stream_id for e in due}
        return [s for s in streams if s in touched]

    assert quadratic() == linear()
    q = min(timeit.repeat(quadratic, number=1, repeat=3))
    lin = min(timeit.repeat(linear, number=20, repeat=3)) / 20
    print(f"one batch: {len(due):,} events over {len(streams):,} streams")
    print(f"  any() per stream (as in apply_in): {q * 1000:9.1f} ms per batch"
          f" = {q / len(due) * 1e6:6.1f} us per event")
    print(f"  set of touched streams:            {lin * 1000:9.3f} ms per batch"
          f" = {lin / len(due) * 1e6:6.3f} us per event")


def _message(args) -> None:
    """CPU per email of building the message and of aiosmtplib flattening it for DATA."""
    from email import policy as email_policy
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText
    from email.header import Header
    from email.utils import formataddr, format_datetime

    from aiosmtplib.email import flatten_message

    from bench.mailer import TIMEZONE, sample_email
    from bench.service_common import SECRET
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo
    from sequences.signing import Signer
    from services.mailer.domain import OutgoingEmail, build_message

    signer = Signer(SECRET.encode())
    date = datetime.now(UTC).astimezone(ZoneInfo(TIMEZONE))

    def outgoing():
        return sample_email(7, signer, date)

    def compat32(e: OutgoingEmail) -> bytes:
        m = MIMEMultipart("alternative")
        m["From"] = formataddr((str(Header(e.sender_name, "utf-8")), e.sender_email))
        m["To"] = e.recipient
        m["Subject"] = Header(e.thread.subject, "utf-8")
        m["Date"] = format_datetime(e.date)
        m["Message-ID"] = e.message_id
        m["List-Unsubscribe"] = f"<{e.unsubscribe_url}>"
        m["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        m.attach(MIMEText(e.text_body, "plain", "utf-8"))
        m.attach(MIMEText(e.html_body, "html", "utf-8"))
        return m.as_bytes(policy=email_policy.compat32.clone(linesep="\r\n"))

    def email_message(e: OutgoingEmail) -> bytes:
        """How the mailer built messages before (EmailMessage, policy.default), flattened as
        aiosmtplib's send_message did."""
        from email.headerregistry import Address
        from email.message import EmailMessage

        m = EmailMessage()
        m["From"] = Address(e.sender_name, addr_spec=e.sender_email)
        m["To"] = e.recipient
        m["Subject"] = e.thread.subject
        m["Date"] = format_datetime(e.date)
        m["Message-ID"] = e.message_id
        m["List-Unsubscribe"] = f"<{e.unsubscribe_url}>"
        m.set_content(e.text_body)
        m.add_alternative(e.html_body, subtype="html")
        return flatten_message(m)

    sample = outgoing()
    cases = [
        ("compose (render, links, OutgoingEmail)", lambda: outgoing()),
        ("EmailMessage + aiosmtplib flatten (as before)", lambda: email_message(sample)),
        ("build_message (compat32, as sent now)", lambda: build_message(sample)),
        ("compat32 MIMEMultipart, as_bytes once", lambda: compat32(sample)),
    ]
    print("per email, best of 5 runs of 300:")
    for label, work in cases:
        best = min(timeit.repeat(work, number=300, repeat=5)) / 300
        print(f"  {label:52} {best * 1e6:8.0f} us")


async def _statements(args) -> None:
    """Per statement cost on the client side: SQLAlchemy's async engine (as the services use
    it) against psycopg's AsyncConnection, N trivial statements in one transaction."""
    import psycopg
    from sqlalchemy import text

    from sequences.db import create_engine, libpq_url

    url = common.fresh_database("statements")
    n = args.n
    engine = create_engine(url)
    results = []
    try:
        for round_ in range(3):
            async with engine.begin() as conn:  # warm: connection, compiled cache, prepare
                for i in range(50):
                    await conn.execute(text("SELECT :x"), {"x": i})
            cpu, wall = time.process_time(), time.perf_counter()
            async with engine.begin() as conn:
                for i in range(n):
                    await conn.execute(text("SELECT :x"), {"x": i})
            results.append(("SQLAlchemy async engine, text()", time.process_time() - cpu,
                            time.perf_counter() - wall))
            async with await psycopg.AsyncConnection.connect(libpq_url(url)) as raw:
                async with raw.transaction():
                    for i in range(50):
                        await raw.execute("SELECT %s", [i])
                cpu, wall = time.process_time(), time.perf_counter()
                async with raw.transaction():
                    for i in range(n):
                        await raw.execute("SELECT %s", [i])
                results.append(("psycopg AsyncConnection", time.process_time() - cpu,
                                time.perf_counter() - wall))
    finally:
        await engine.dispose()
    print(f"{n:,} sequential statements in one transaction (3 rounds; best):")
    for label in dict.fromkeys(r[0] for r in results):
        mine = [r for r in results if r[0] == label]
        cpu = min(r[1] for r in mine) / n
        wall = min(r[2] for r in mine) / n
        print(f"  {label:34} client CPU {cpu * 1e6:6.0f} us, wall {wall * 1e6:6.0f} us"
              " per statement")


_QUADRATIC = "moved = [stream for stream in streams if any(e.stream_id == stream for e in due)]"
_LINEAR = ("touched = {e.stream_id for e in due}\n"
           "    moved = [stream for stream in streams if stream in touched]")


def _linear_apply_in():
    """consumer.apply_in with only its `moved` line made linear (compiled from its current
    source, so everything else stays as the service runs it); None if the line is gone."""
    import inspect
    import textwrap

    from sequences.messaging import consumer

    source = textwrap.dedent(inspect.getsource(consumer.apply_in))
    if _QUADRATIC not in source:
        return None
    namespace = dict(vars(consumer))
    exec(compile(source.replace(_QUADRATIC, _LINEAR), consumer.__file__, "exec"), namespace)
    return namespace["apply_in"]


async def _enrollment(args) -> None:
    """Bulk enrollment and rebuild as the benchmark runs them, then again with apply_in's
    `moved` list computed from a set (patched in this process only)."""
    from bench import enrollment
    from sequences import projections
    from services.enrollment import handlers

    linear = _linear_apply_in()
    if linear is None:
        print("apply_in no longer has the quadratic `moved` line: nothing to compare")
        return
    original = handlers.apply_in, projections.apply_in
    rows = []
    for label, patch in (("as is", None), ("moved from a set", linear)):
        if patch is not None:
            handlers.apply_in = projections.apply_in = patch
        try:
            [bulk] = await enrollment._bulk_enroll(args.n, quick=False)
            [rebuilt] = await enrollment._rebuild(args.events)
        finally:
            handlers.apply_in, projections.apply_in = original
        rows.append((label, bulk.value, rebuilt.value))
    print(f"\n{'variant':20} {'bulk-enroll ' + format(args.n, ',') + ' s':>20}"
          f" {'rebuild events/s':>17}")
    for label, bulk_s, rate in rows:
        print(f"{label:20} {bulk_s:20.2f} {rate:17,.0f}")


async def _read(args) -> None:
    """How fast the log can be read for a rebuild, by path: EventStore.read_all (a binary
    server-side cursor, data parsed by pydantic-core) against psycopg used plainly, with and
    without decoding `data` and building envelopes. The floor under any rebuild rate."""
    import json

    import psycopg

    from bench import enrollment
    from bench.service_common import migrated_database
    from contracts.base import EventEnvelope
    from sequences.clock import SystemClock
    from sequences.db import create_engine, libpq_url
    from sequences.eventlog.store import EventStore
    from services.enrollment.projections import PROJECTION

    url = await migrated_database("read", enrollment.MIGRATIONS)
    written, _ = await asyncio.to_thread(enrollment._write_events, url, args.events)
    categories = PROJECTION.subscription.categories
    columns = ("position, event_id, stream_id, version, type, schema_version, occurred_at,"
               " correlation_id, causation_id, traceparent, tracestate")
    where = ("WHERE position > %s AND split_part(stream_id, '-', 1) = ANY(%s)"
             " ORDER BY position LIMIT %s")

    def store_read(types_with_data):
        async def read():
            engine, store = create_engine(url), EventStore(SystemClock())
            count = 0
            try:
                async with engine.connect() as conn:
                    async for batch in store.read_all(conn, categories, 5000, types_with_data):
                        count += len(batch)
            finally:
                await engine.dispose()
            return count
        return read

    def raw(data_sql: str, binary: bool, envelopes: bool, loads=None):
        async def read():
            count, after = 0, 0
            async with await psycopg.AsyncConnection.connect(libpq_url(url)) as conn:
                cur = conn.cursor(binary=binary)
                while True:
                    await cur.execute(f"SELECT {columns}, {data_sql} FROM eventlog.events"
                                      f" {where}", [after, list(categories), 5000])
                    rows = await cur.fetchall()
                    if not rows:
                        return count
                    if envelopes:
                        for r in rows:
                            EventEnvelope.model_construct(
                                event_id=r[1], stream_id=r[2], version=r[3], type=r[4],
                                schema_version=r[5], occurred_at=r[6], correlation_id=r[7],
                                causation_id=r[8], traceparent=r[9], tracestate=r[10],
                                data=loads(r[11]) if loads else r[11])
                    elif loads:
                        for r in rows:
                            loads(r[11])
                    count += len(rows)
                    after = rows[-1][0]
        return read

    cases = [
        ("EventStore.read_all (as rebuild reads)",
         store_read(PROJECTION.subscription.handled_types)),
        ("EventStore.read_all, every event's data", store_read(None)),
        ("psycopg, jsonb decoded by psycopg, envelopes", raw("data", False, True)),
        ("psycopg, jsonb decoded, tuples only", raw("data", False, False)),
        ("psycopg, data as text, json.loads, tuples", raw("data::text", False, False,
                                                            json.loads)),
        ("psycopg binary, data as text, no decoding", raw("data::text", True, False)),
    ]
    print(f"\nreading {written:,} events (best of 2):")
    for label, read in cases:
        best = None
        for _ in range(2):
            start = time.perf_counter()
            count = await read()
            seconds = time.perf_counter() - start
            best = seconds if best is None else min(best, seconds)
        print(f"  {label:48} {count / best:10,.0f} events/s")


async def _round_trips(args) -> None:
    """SQL statements, commits and SMTP commands the mailer process sends per email."""
    import json

    from bench import mailer
    from bench.service_common import nats_server

    with tempfile.TemporaryDirectory() as root, tempfile.TemporaryDirectory() as logs, \
            nats_server("mailer") as server:
        counts_file = Path(logs) / "counts.json"
        capture = mailer.Capture(Path(root), Path(logs))
        capture.start()
        try:
            r = await mailer._end_to_end(
                "counted", args.n, server.url, capture, Path(logs), verify=True,
                module_args=["bench.experiments.services", "service", "mailer",
                             f"--count-to={counts_file}"])
        finally:
            capture.stop()
        for _ in range(50):
            if counts_file.exists():
                break
            await asyncio.sleep(0.1)
        counts = json.loads(counts_file.read_text())
    n = r["emails"]
    print(f"\nper email, over {n:,} emails (the mailer process, relay included):")
    for key, value in sorted(counts.items(), key=lambda kv: -kv[1]):
        if value >= n / 20:
            print(f"  {value / n:6.2f}  {key}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.experiments.services")
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("service")
    s.add_argument("name")
    for flag in ("concurrency", "fetch", "pool", "smtp-pool", "fire-batch"):
        s.add_argument(f"--{flag}", type=int)
    s.add_argument("--count-to", help="count SQL statements and SMTP commands into this file")
    m = sub.add_parser("mailer")
    m.add_argument("--n", type=int, default=3000)
    m.add_argument("--repeat", type=int, default=1)
    c = sub.add_parser("scheduler")
    c.add_argument("--n", type=int, default=50_000)
    c.add_argument("--repeat", type=int, default=1)
    t = sub.add_parser("statements")
    t.add_argument("--n", type=int, default=5000)
    e = sub.add_parser("enrollment")
    e.add_argument("--n", type=int, default=100_000)
    e.add_argument("--events", type=int, default=200_000)
    rd = sub.add_parser("read")
    rd.add_argument("--events", type=int, default=300_000)
    rt = sub.add_parser("round-trips")
    rt.add_argument("--n", type=int, default=1000)
    sub.add_parser("moved")
    sub.add_parser("message")
    args = parser.parse_args()
    if args.what == "service":
        _run_patched(args)
        return
    if args.what in ("moved", "message"):
        {"moved": _moved, "message": _message}[args.what](args)
        return
    try:
        asyncio.run({"mailer": _mailer, "scheduler": _scheduler,
                     "statements": _statements, "enrollment": _enrollment,
                     "read": _read, "round-trips": _round_trips}[args.what](args))
    finally:
        common.close()


if __name__ == "__main__":
    main()
