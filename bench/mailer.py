"""Mailer (issue 4): due email steps to sent, recorded emails, against raw SMTP.

The issue: "10,000 due email steps -> rendered -> accepted by the local SMTP capture server ->
EmailSent recorded, emails/s end to end; in the same run, raw aiosmtplib sending the same number
of pre-built messages over 8 connections to the same server. Target: end to end at least 25% of
the raw rate. Report the mailer's memory."

How it runs: a nats-server of our own, a fresh database with every schema, the SMTP capture
server as its own process (`python -m sequences.devstack.capture`, mail directory on /dev/shm
for both sides). What the mailer knows of the sequence (one email step with a subject and merge
variables) and of N contacts is written straight into `mailer.sequences` / `mailer.contacts`;
N StepDue events (one `schedule-<enrollment>` stream each) are appended through
`EventStore.append` and put on JetStream by the outbox relay, all before the mailer starts, so
they wait on JetStream as if the scheduler had just fired them. Then the real mailer service
(`python -m sequences.cli run mailer`) starts; the clock runs from when it logs "started" until
N EmailSent events are in `eventlog.events` (and the capture server holds N messages). The
mailer's own relay publishes its EmailSent events meanwhile, as in production.

The raw baseline, same run, same capture server: aiosmtplib over 8 connections (the mailer's
pool size), `sendmail` of N messages built before timing with the mailer's own rendering and
message code (same size and shape: multipart/alternative, links, List-Unsubscribe).

Runs with SMTP_VERIFY_URL set (as `make up` does) and, in full runs, without it. Memory: the
mailer's peak RSS, sampled every 0.1 s. CPU seconds of the mailer, the capture server,
PostgreSQL and nats-server during the timed part are in the JSON (two cores are shared).

    python -m bench --only mailer [--quick]
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiosmtplib
import nats
import psycopg
from psycopg.rows import dict_row
from sqlalchemy import text

from bench import common
from bench.common import BENCH_WORKSPACE, Result
from bench.service_common import (
    MB,
    SECRET,
    CpuMeter,
    ServiceProcess,
    fresh_events_stream,
    migrated_database,
    nats_server,
    postmaster_pid,
    py_spy,
)
from contracts.events import StepDue
from contracts.values import Step
from sequences.clock import SystemClock
from sequences.db import create_engine, libpq_url
from sequences.devstack.ports import free_port, wait_for_port
from sequences.eventlog.relay import Relay
from sequences.eventlog.store import Append, Causation, EventStore
from sequences.services import all_migrations
from sequences.signing import Signer
from services.mailer.domain import (
    Links,
    OutgoingEmail,
    build_message,
    html_body_for,
    message_id_for,
    render,
    text_body_for,
    thread_for,
)

TARGET = 0.25  # end to end at least 25% of the raw rate
CONNECTIONS = 8
SENDER_NAME, SENDER_EMAIL, TIMEZONE = "이영희", "younghee@sales.example", "Asia/Seoul"
STEP = Step(channel="email", wait_days=0, subject="{{고객명}}님, {{회사명}} 견적 건",
            body="안녕하세요 {{고객명}}님,\n\n{{회사명}}에 보내드린 견적 관련 연락드립니다."
                 "\n검토해 보시고 궁금한 점이 있으면 언제든 말씀해 주세요.\n\n{{담당자명}} 드림")


def _contact(i: int) -> tuple[uuid.UUID, str, dict]:
    return (uuid.uuid4(), f"customer{i}@customer.example",
            {"name": f"김민수{i}", "company": "한빛상사", "job_title": "과장", "owner_name": "이영희"})


# --- the capture server ------------------------------------------------------------------------


class Capture:
    """The SMTP capture server as its own process, mail on /dev/shm (tmpfs) when there is one."""

    def __init__(self, root: Path, log_dir: Path):
        self.mail_dir = root / "mail"
        self.smtp_port, self.http_port = free_port(), free_port()
        self.log_path = log_dir / "capture.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sequences.devstack.capture", "--mail-dir",
                 str(self.mail_dir), "--smtp-port", str(self.smtp_port),
                 "--http-port", str(self.http_port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        wait_for_port("127.0.0.1", self.smtp_port, timeout=30, process=self.process)
        wait_for_port("127.0.0.1", self.http_port, timeout=30, process=self.process)

    def count(self) -> int:
        return sum(1 for _ in self.mail_dir.glob("*.eml"))

    def clear(self) -> None:
        for path in self.mail_dir.iterdir():
            path.unlink(missing_ok=True)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --- raw baseline ------------------------------------------------------------------------------


def sample_email(i: int, signer: Signer, date: datetime) -> OutgoingEmail:
    """Contact i's email as the mailer builds it (rendered, with signed links)."""
    _, email, values = _contact(i)
    enrollment_id = uuid.uuid4()
    pixel = signer.sign("open", {"e": str(enrollment_id), "s": str(STEP.step_id)})
    unsubscribe = signer.sign("unsubscribe", {"c": str(uuid.uuid4())})
    links = Links(f"http://127.0.0.1:8080/t/{pixel}.gif",
                  f"http://127.0.0.1:8080/unsubscribe/{unsubscribe}")
    return OutgoingEmail(
        sender_name=SENDER_NAME, sender_email=SENDER_EMAIL, recipient=email,
        thread=thread_for(render(STEP.subject, values), None),
        text_body=text_body_for(STEP.body, values, links),
        html_body=html_body_for(STEP.body, values, links),
        message_id=message_id_for(enrollment_id, STEP.step_id, SENDER_EMAIL), date=date,
        unsubscribe_url=links.unsubscribe_url)


def _prebuilt(n: int) -> list[tuple[str, bytes]]:
    """N messages as the mailer builds them, serialised before timing."""
    signer = Signer(SECRET.encode())
    date = datetime.now(UTC).astimezone(ZoneInfo(TIMEZONE))
    return [(e.recipient, build_message(e).payload)
            for e in (sample_email(i, signer, date) for i in range(n))]


async def _raw_smtp(port: int, messages: list[tuple[str, bytes]]) -> float:
    """Seconds for aiosmtplib over CONNECTIONS connections to send every message."""
    pending = iter(messages)

    async def connection() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
        await client.connect()
        try:
            for recipient, data in pending:
                await client.sendmail(SENDER_EMAIL, [recipient], data)
        finally:
            await client.quit()

    start = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    return time.perf_counter() - start


# --- end to end --------------------------------------------------------------------------------


async def _seed(url: str, nats_url: str, n: int) -> None:
    """The sequence and contacts as the mailer's projections would hold them, and N StepDue on
    JetStream (appended to the log, published by the relay)."""
    sequence_id = uuid.uuid4()
    contacts = [_contact(i) for i in range(n)]
    with psycopg.connect(**common.connect_params(url), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO mailer.sequences (sequence_id, sender_name, sender_email, timezone,"
            " steps) VALUES (%s, %s, %s, %s, %s::jsonb)",
            [sequence_id, SENDER_NAME, SENDER_EMAIL, TIMEZONE,
             json.dumps([STEP.model_dump(mode="json")])])
        with conn.transaction(), conn.cursor().copy(
                "COPY mailer.contacts (contact_id, email, merge_values) FROM STDIN") as copy:
            for contact_id, email, values in contacts:
                copy.write_row((contact_id, email, json.dumps(values, ensure_ascii=False)))
        conn.execute("ANALYZE mailer.contacts")
    engine = create_engine(url, pool_size=1)
    store = EventStore(SystemClock())
    now = datetime.now(UTC)
    try:
        for start in range(0, n, 1000):
            appends = []
            for contact_id, _, _ in contacts[start:start + 1000]:
                due = StepDue(enrollment_id=uuid.uuid4(), sequence_id=sequence_id,
                              contact_id=contact_id, step_id=STEP.step_id, step_index=0,
                              channel="email", due_at=now)
                appends.append(Append(due.stream_id(), 0, [due]))
            async with engine.begin() as conn:
                await store.append(conn, appends, Causation.new(BENCH_WORKSPACE))
        async with engine.connect() as conn:
            await conn.execute(text("ANALYZE eventlog.events"))
    finally:
        await engine.dispose()
    nc = await nats.connect(nats_url)
    try:
        relay = Relay(url, nc.jetstream())
        async with await psycopg.AsyncConnection.connect(
                libpq_url(url), autocommit=True, row_factory=dict_row) as conn:
            while await relay.relay_batch(conn):
                pass
    finally:
        await nc.close()


async def _sent(url: str) -> tuple[int, float | None]:
    """EmailSent events in the log, and the seconds between the first and the last recorded."""
    with psycopg.connect(**common.connect_params(url)) as conn:
        count, first, last = conn.execute(
            "SELECT count(*), min(recorded_at), max(recorded_at) FROM eventlog.events"
            " WHERE type = 'EmailSent'").fetchone()
    return count, (last - first).total_seconds() if count > 1 else None


async def _end_to_end(label: str, n: int, server_url: str, capture: Capture, log_dir: Path,
                      verify: bool, profile: tuple[Path, float] | None = None,
                      module_args: list[str] | None = None,
                      extra_env: dict[str, str] | None = None) -> dict:
    """`profile`: (file, seconds) to record the mailer with py-spy once it started;
    `extra_env`: added to the mailer's environment (metrics off: bench/metrics_cost.py)."""
    common.progress(f"mailer [{label}]: fresh database, {n:,} contacts, {n:,} StepDue on"
                    " JetStream")
    url = await migrated_database("mailer", *all_migrations())
    nc = await nats.connect(server_url)
    await fresh_events_stream(nc.jetstream())
    await nc.close()
    await _seed(url, server_url, n)
    capture.clear()
    env = {"DATABASE_URL": url, "NATS_URL": server_url,
           "SMTP_URL": f"smtp://127.0.0.1:{capture.smtp_port}"}
    if verify:
        env["SMTP_VERIFY_URL"] = f"http://127.0.0.1:{capture.http_port}"
    env.update(extra_env or {})
    mailer = ServiceProcess("mailer", env, log_dir, module_args)
    meter = None
    try:
        mailer.start()
        started_in = await mailer.wait_started()
        pids = {"mailer": mailer.pid, "capture": capture.process.pid}
        if (pg := postmaster_pid(url)) is not None:
            pids["postgres"] = pg
        meter = CpuMeter(pids, trees=("postgres",))
        meter.start()
        mailer.start_sampling()
        spy = py_spy(mailer.pid, profile[1], profile[0]) if profile else None
        began = time.perf_counter()
        ticker = common.Ticker(f"EmailSent recorded ({label})", n, unit="emails")
        while (sent := (await _sent(url))[0]) < n:
            if not mailer.alive():
                raise RuntimeError(f"the mailer exited:\n{mailer.tail()}")
            if time.perf_counter() - began > 600:
                raise TimeoutError(f"only {sent:,} of {n:,} EmailSent after 10 min")
            ticker.tick(sent)
            await asyncio.sleep(0.1)
        seconds = time.perf_counter() - began
        if spy is not None:
            await asyncio.to_thread(spy.wait)
        mailer.stop_sampling()
        cpu = meter.stop()
        _, steady = await _sent(url)
        captured = capture.count()
        if errors := mailer.errors():
            common.progress(f"  the mailer logged {len(errors)} warnings/errors, e.g.:"
                            f" {errors[0][:300]}")
    finally:
        mailer.stop()
    common.progress(f"mailer [{label}]: {n:,} in {seconds:.1f} s = {n / seconds:,.0f} emails/s"
                    f" (peak RSS {mailer.peak_rss / MB:.0f} MB, captured {captured:,})")
    return {"emails": n, "seconds": round(seconds, 2), "per_s": n / seconds,
            "first_to_last_recorded_s": steady and round(steady, 2),
            "steady_per_s": round(n / steady) if steady else None,
            "captured": captured, "mailer_start_s": round(started_in, 2),
            "mailer_peak_rss_mb": round(mailer.peak_rss / MB, 1),
            "mailer_idle_rss_mb": round(mailer.idle_rss / MB, 1),
            "peak_rss": mailer.peak_rss, "idle_rss": mailer.idle_rss,
            "smtp_verify_url": verify, **cpu}


async def run(quick: bool) -> list[Result]:
    n = 1_000 if quick else 10_000
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(prefix="sequences-bench-mailer-",
                                     dir=shm if shm.is_dir() else None) as mail_root, \
            tempfile.TemporaryDirectory(prefix="sequences-bench-mailer-logs-") as logs, \
            nats_server("mailer") as server:
        capture = Capture(Path(mail_root), Path(logs))
        capture.start()
        try:
            common.progress(f"mailer: building {n:,} messages for the raw baseline")
            messages = await asyncio.to_thread(_prebuilt, n)
            size = sum(len(data) for _, data in messages) / n
            common.progress(f"mailer: raw aiosmtplib, {n:,} messages ({size:,.0f} bytes each)"
                            f" over {CONNECTIONS} connections")
            meter = CpuMeter({"capture": capture.process.pid})
            meter.start()
            raw_seconds = await _raw_smtp(capture.smtp_port, messages)
            raw_cpu = meter.stop()
            raw_captured = capture.count()
            raw_rate = n / raw_seconds
            common.progress(f"  raw: {raw_rate:,.0f} emails/s ({raw_seconds:.2f} s,"
                            f" captured {raw_captured:,})")
            del messages
            runs = [await _end_to_end("SMTP_VERIFY_URL set", n, server.url, capture,
                                      Path(logs), verify=True)]
            if not quick:
                runs.append(await _end_to_end("no SMTP_VERIFY_URL", n, server.url, capture,
                                              Path(logs), verify=False))
        finally:
            capture.stop()
    raw = {"raw_seconds": round(raw_seconds, 3), "raw_per_s": round(raw_rate),
           "raw_captured": raw_captured, "message_bytes": round(size),
           **{f"raw_{k}": v for k, v in raw_cpu.items()}}
    results = []
    for e2e in runs:
        which = "with SMTP_VERIFY_URL" if e2e["smtp_verify_url"] else "without SMTP_VERIFY_URL"
        details = {k: v for k, v in e2e.items() if k not in ("peak_rss", "idle_rss")}
        results.append(Result.compare(
            f"mailer, {n:,} due email steps -> SMTP capture -> EmailSent recorded ({which})",
            e2e["per_s"], "emails/s", raw_rate, f"raw aiosmtplib, {CONNECTIONS} connections",
            TARGET, {**details, **raw}))
    peak = max(runs, key=lambda r: r["peak_rss"])
    results.append(Result(
        "mailer peak RSS while sending (baseline: idle, just started)", peak["peak_rss"] / MB,
        "MB", peak["idle_rss"] / MB, "idle mailer",
        peak["peak_rss"] / peak["idle_rss"] if peak["idle_rss"] else None,
        details={("verify" if r["smtp_verify_url"] else "no verify"):
                 {"peak_rss_mb": r["mailer_peak_rss_mb"], "idle_rss_mb": r["mailer_idle_rss_mb"]}
                 for r in runs}))
    return results
