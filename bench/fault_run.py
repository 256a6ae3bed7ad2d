"""Fault run: the whole system keeps its promises while its parts are killed.

    python -m bench.fault_run                          10,000 enrollments, seed at random
    python -m bench.fault_run --enrollments 300 --kills 1 --seed 7

N contacts are enrolled into a three-step email sequence (waits 0, 1 and 2 days) on the dev
stack (sequences/devstack/stack.py): embedded PostgreSQL, nats-server, the SMTP capture server
and every service as its own process, the mailer as two replicas. Time is moved with the shared
adjustable clock once every enrollment has completed a step, so the next one falls due for all.

Meanwhile every service is SIGKILLed --kills times (a random replica of the mailer) and started
again, nats-server is restarted once and PostgreSQL once. Each fault fires when the capture
server has received a random number of emails (drawn from the seed), so the faults land while
work is under way, spread over the whole run; a service that exits on its own (it started
while PostgreSQL was down) is started again, as a supervisor would.

At the end it prints emails expected, captured, missing and duplicated (by Message-ID, stable per
enrollment and step); enrollments per final status against what was expected; events in the log,
on JetStream and seen by each consumer; then rebuilds the projections (`sequences projections
rebuild`) and compares them with the live tables row for row. The exit status is 0 only with no
email missing or doubled, every status right, every consumer level with the log and the rebuilt
tables equal to the live ones. It also prints every process's peak RSS (the highest any
instance of it reached; a killed one's up to its last sample, taken each second), against
issue 18's 150 MB but not part of the pass. Progress goes to stderr, the report to stdout; the stack's data
and logs stay in --data-dir (a temporary directory, kept when the run fails).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Awaitable, Callable

import httpx
from sqlalchemy import text

from bench.common import progress
from bench.service_common import MB, RSS_LIMIT_MB, RssSampler, stack_pids, until_settled
from sequences import clock, projections
from sequences.db import create_engine
from sequences.devstack.stack import Stack, StackConfig
from sequences.messaging.nats import connect
from sequences.services import SERVICES, all_projections
from services.mailer.domain import message_id_for

WAITS = (0, 1, 2)  # days before each step: the first at once, then one and two days later
SENDER = "faults@sales.example"
TAG = "fault-run"


@dataclass(frozen=True)
class Options:
    enrollments: int = 10_000
    seed: int | None = None
    kills: int = 3  # SIGKILLs per service
    mailers: int = 2
    restart_nats: bool = True
    restart_postgres: bool = True
    power_cut: bool = False  # nats-server also killed once with the unsynced tail of its store cut
    nats_cluster: int = 1  # > 1: a cluster; one node killed, and later the stream's leader
    stall_seconds: float = 180.0  # no progress for this long: the run stops and reports
    data_dir: Path | None = None


@dataclass
class Fault:
    after_emails: int  # fires once the capture server holds this many emails
    what: str  # "mailer-1", "nats-server", "postgres", ...
    apply: Callable[[Stack], None]
    fired_at: float | None = None  # seconds into the run


@dataclass
class Report:
    seed: int
    enrollments: int
    emails_expected: int = 0
    emails_captured: int = 0
    emails_missing: int = 0
    emails_duplicated: int = 0
    emails_unexpected: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    statuses_expected: dict[str, int] = field(default_factory=dict)
    events_in_log: int = 0
    events_on_jetstream: int = 0
    consumers: dict[str, tuple[int, int]] = field(default_factory=dict)  # name: (log, seen)
    rebuild_differences: dict[str, dict[str, int]] | None = None
    faults: list[Fault] = field(default_factory=list)
    exited_on_their_own: list[str] = field(default_factory=list)
    stalled: str | None = None
    seconds: float = 0.0
    peak_rss: dict[str, int] = field(default_factory=dict)  # label: bytes, every instance's highest

    @property
    def passed(self) -> bool:
        return (self.stalled is None and self.emails_missing == 0
                and self.emails_duplicated == 0 and self.emails_unexpected == 0
                and self.statuses == self.statuses_expected
                and all(log == seen for log, seen in self.consumers.values())
                and self.events_on_jetstream == self.events_in_log
                and self.rebuild_differences == {})

    def format(self) -> str:
        fired = [f for f in self.faults if f.fired_at is not None]
        lines = [
            f"fault run: {self.enrollments:,} enrollments x {len(WAITS)} email steps,"
            f" seed {self.seed}, {self.seconds:.0f} s",
            f"faults: {len(fired)} of {len(self.faults)} fired: "
            + ", ".join(f"{f.what}@{f.fired_at:.0f}s" for f in fired),
            f"services that exited on their own and were started again:"
            f" {', '.join(self.exited_on_their_own) or 'none'}",
            f"emails     expected {self.emails_expected:,}  captured {self.emails_captured:,}"
            f"  missing {self.emails_missing:,}  duplicated {self.emails_duplicated:,}"
            f"  unexpected {self.emails_unexpected:,}",
            f"statuses   {_counts(self.statuses)}   expected {_counts(self.statuses_expected)}",
            f"events     in the log {self.events_in_log:,}"
            f"  on JetStream {self.events_on_jetstream:,}",
            *(f"  consumer {name:<22} log {log:>8,}  seen {seen:>8,}"
              f"{'' if log == seen else '  MISMATCH'}"
              for name, (log, seen) in sorted(self.consumers.items())),
            "rebuild    " + ("not run" if self.rebuild_differences is None else
                             "same rows as live" if not self.rebuild_differences else
                             f"differs: {self.rebuild_differences}"),
        ]
        lines.append(f"peak RSS   {_peaks(self.peak_rss)}   (services < {RSS_LIMIT_MB} MB,"
                     " issue 18; not part of the pass)")
        if self.stalled:
            lines.append(f"stalled: {self.stalled}")
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def _peaks(peaks: dict[str, int]) -> str:
    def one(label: str, peak: int) -> str:
        over = not label.startswith("nats-server") and peak / MB >= RSS_LIMIT_MB
        return f"{label} {peak / MB:.0f} MB{' OVER' if over else ''}"

    return ", ".join(one(*item) for item in sorted(peaks.items(), key=lambda item: -item[1]))


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())) or "none"


class Stalled(Exception):
    """No progress for too long: the run reports what it found instead of waiting forever."""


# --- the faults --------------------------------------------------------------------------------


def fault_plan(options: Options, rng: random.Random) -> list[Fault]:
    """Every fault, each at a random count of captured emails, in firing order."""
    faults = []
    for name in SERVICES:
        replicas = options.mailers if name == "mailer" else 1
        for _ in range(options.kills):
            replica = rng.randrange(replicas)
            label = name if replica == 0 else f"{name}-{replica}"
            faults.append(Fault(0, label, lambda s, n=name, r=replica: s.restart_service(n, r)))
    if options.restart_nats:
        faults.append(Fault(0, "nats-server", Stack.restart_nats))
    if options.restart_postgres:
        faults.append(Fault(0, "postgres", Stack.restart_postgres))
    if options.power_cut:
        faults.append(Fault(0, "nats-server power cut", Stack.power_cut_nats))
    if options.nats_cluster > 1:
        faults.append(Fault(0, "a NATS node", Stack.kill_nats_node))
        faults.append(Fault(0, "the events stream's NATS leader",
                            lambda s: s.kill_nats_node(leader=True)))
    emails = options.enrollments * len(WAITS)
    # not in the last tenth: a fault then would have little left to disturb
    for fault in faults:
        fault.after_emails = rng.randrange(int(emails * 0.9))
    return sorted(faults, key=lambda f: f.after_emails)


def captured_so_far(stack: Stack) -> int:
    """Emails the capture server has written (one .eml each): cheap enough to poll."""
    return sum(1 for entry in os.scandir(stack.mail_dir) if entry.name.endswith(".eml"))


async def inflict(stack: Stack, faults: list[Fault], started: float, exited: list[str],
                  done: asyncio.Event) -> None:
    """Fire each fault when its moment comes; start again what exits on its own, until `done`."""
    pending = list(faults)
    while not done.is_set():
        exited += await asyncio.to_thread(stack.restart_dead)
        if pending and captured_so_far(stack) >= pending[0].after_emails:
            fault = pending.pop(0)
            fault.fired_at = time.monotonic() - started
            progress(f"  fault: {fault.what} (after {fault.after_emails:,} emails)")
            await asyncio.to_thread(fault.apply, stack)
        await asyncio.sleep(0.2)


# --- driving the system ------------------------------------------------------------------------


async def until_answered(request: Callable[[], Awaitable[httpx.Response]], what: str,
                         timeout: float = 180.0) -> httpx.Response:
    """An idempotent API call, repeated while the gateway or a service behind it restarts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = await request()
            if response.status_code < 500:
                response.raise_for_status()
                return response
            problem = f"{response.status_code} {response.text[:200]}"
        except httpx.TransportError as error:
            problem = repr(error)
        if time.monotonic() > deadline:
            raise Stalled(f"{what}: no answer in {timeout:.0f} s (last: {problem})")
        await asyncio.sleep(0.5)


async def until_possible(action: Callable[[], Awaitable], what: str, timeout: float = 120.0):
    """A database or NATS action, repeated while PostgreSQL or nats-server restarts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await action()
        except Exception as error:  # noqa: BLE001 - whatever a restarting server raises
            if time.monotonic() > deadline:
                raise Stalled(f"{what}: failing for {timeout:.0f} s ({error!r})") from error
            await asyncio.sleep(0.5)


def sequence_body() -> dict:
    steps = [{"channel": "email", "wait_days": wait, "body": f"Step {i + 1} for {{{{고객명}}}}",
              **({"subject": "{{회사명}}: fault run"} if i == 0 else {})}
             for i, wait in enumerate(WAITS)]
    return {"name": "fault run", "sender_name": "Faults", "sender_email": SENDER,
            "timezone": "UTC", "send_policy": {"mode": "as_soon_as_due"}, "steps": steps}


async def set_up(api: httpx.AsyncClient, n: int) -> str:
    """The sequence and N tagged contacts (before any fault); returns the sequence id."""
    sequence = await api.post("/v1/sequences", json=sequence_body())
    sequence.raise_for_status()
    rows = "\n".join(f"고객{i},회사{i},c{i}@{TAG}.example,{TAG}" for i in range(n))
    imported = await api.post("/v1/contacts/import", headers={"content-type": "text/csv"},
                              content=f"name,company,email,tags\n{rows}\n".encode())
    imported.raise_for_status()
    if imported.json()["created"] != n:
        raise RuntimeError(f"import: {imported.json()}")
    return sequence.json()["id"]


class Progress:
    """What the system has done so far, read from the database (a restart in between is
    waited out)."""

    def __init__(self, stack: Stack, sequence_id: str):
        self.engine = create_engine(stack.database_url, pool_size=2)
        self.sequence_id = sequence_id

    async def enrollments_with_sends(self, sends: int) -> int:
        async def query():
            async with self.engine.connect() as conn:
                return (await conn.execute(text(
                    "SELECT count(*) FROM enrollment.enrollments"
                    " WHERE sequence_id = :s AND sends >= :n"),
                    {"s": self.sequence_id, "n": sends})).scalar_one()
        return await until_possible(query, "reading the enrollments")

    async def until(self, sends: int, n: int, stall_seconds: float, every: float = 2) -> None:
        """Until N enrollments have `sends` emails recorded, looking every `every` seconds;
        Stalled if nothing moves."""
        last, moved = -1, time.monotonic()
        while (done := await self.enrollments_with_sends(sends)) < n:
            if done != last:
                progress(f"  {done:,} of {n:,} enrollments have sent {sends} email(s)")
                last, moved = done, time.monotonic()
            elif time.monotonic() - moved > stall_seconds:
                raise Stalled(f"{done:,} of {n:,} enrollments sent {sends} emails;"
                              f" nothing moved for {stall_seconds:.0f} s")
            await asyncio.sleep(every)


async def move_clock(stack: Stack, to: timedelta) -> None:
    """Set the shared clock's offset (absolute, so a repeat after a NATS restart is harmless)."""
    async def put():
        nc = await connect(stack.env()["NATS_URL"], "fault-run")
        try:
            await asyncio.wait_for(clock.set_offset(nc.jetstream(), to), 10)
        finally:
            await nc.close()
    await until_possible(put, "moving the clock")
    progress(f"  clock moved: offset {to}")


async def drive(stack: Stack, api: httpx.AsyncClient, sequence_id: str, options: Options) -> None:
    """Enroll everyone, then move the clock each time every enrollment completed a step."""
    n = options.enrollments
    await until_answered(lambda: api.post(f"/v1/sequences/{sequence_id}/enrollments/bulk",
                                          json={"segment": {"tag": TAG}}), "bulk enrollment")
    tracker = Progress(stack, sequence_id)
    try:
        offset = timedelta()
        for step, wait in enumerate(WAITS[1:], start=1):
            await tracker.until(step, n, options.stall_seconds)
            offset += timedelta(days=wait, minutes=1)
            await move_clock(stack, offset)
        await tracker.until(len(WAITS), n, options.stall_seconds)
    finally:
        await tracker.engine.dispose()


# --- the checks --------------------------------------------------------------------------------


async def check_emails(stack: Stack, engine, report: Report) -> None:
    """Every (enrollment, step) in the log against the Message-IDs the capture server holds."""
    async with stack_viewer(stack) as viewer, engine.connect() as conn:
        enrolled = [row[0] for row in await conn.execute(text(
            "SELECT data->>'enrollment_id' FROM eventlog.events WHERE type = 'ContactEnrolled'"))]
        steps = (await conn.execute(text(
            "SELECT data->'steps' FROM eventlog.events WHERE type = 'SequenceCreated'"
            " AND data->>'sender_email' = :s"), {"s": SENDER})).scalar_one()
        captured = (await viewer.get("/messages")).json()
    expected = {message_id_for(uuid.UUID(e), uuid.UUID(s["step_id"]), SENDER)
                for e in enrolled for s in steps}
    received = Counter(m["message_id"] for m in captured)
    report.emails_expected = report.enrollments * len(WAITS)
    report.emails_captured = sum(received.values())
    report.emails_missing = report.emails_expected - len(expected & received.keys())
    report.emails_duplicated = sum(count - 1 for count in received.values())
    report.emails_unexpected = len(received.keys() - expected)


def stack_viewer(stack: Stack) -> httpx.AsyncClient:
    """The capture server's HTTP side: what it received."""
    return httpx.AsyncClient(base_url=stack.viewer_url, timeout=120)


async def check_statuses(api: httpx.AsyncClient, sequence_id: str, report: Report) -> None:
    detail = (await until_answered(lambda: api.get(f"/v1/sequences/{sequence_id}"),
                                   "the sequence")).json()
    report.statuses = {status: n for status, n in detail["counts"].items() if n}
    report.statuses_expected = {"done": report.enrollments}


async def check_events(stack: Stack, engine, report: Report) -> None:
    """Once the outbox is empty and the consumers caught up (or a minute passed): events in the
    log, on JetStream and seen by each durable consumer."""
    levels = await until_settled(stack.env()["NATS_URL"], engine)
    report.events_in_log, report.events_on_jetstream = levels.in_log, levels.on_jetstream
    report.consumers = levels.consumers


async def check_rebuild(stack: Stack, engine, report: Report) -> None:
    """`sequences projections rebuild`, then the read models against the live ones."""
    live = await projections.read_models(engine, all_projections())
    rebuild = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sequences.cli", "projections", "rebuild",
        env={**os.environ, **stack.env()}, stderr=asyncio.subprocess.PIPE)
    _, output = await rebuild.communicate()
    if rebuild.returncode != 0:
        raise RuntimeError(f"projections rebuild failed:\n{output.decode()}")
    report.rebuild_differences = projections.differences(
        live, await projections.read_models(engine, all_projections()))


# --- the run -----------------------------------------------------------------------------------


def stack_config(data_dir: Path, options: Options) -> StackConfig:
    return StackConfig(data_dir=data_dir, gateway_port=0, nats_port=0, smtp_port=0,
                       mail_viewer_port=0, log_to_files=True,
                       replicas={"mailer": options.mailers}, nats_cluster=options.nats_cluster)


async def run(options: Options) -> Report:
    seed = options.seed if options.seed is not None else random.randrange(2**32)
    report = Report(seed=seed, enrollments=options.enrollments)
    report.faults = fault_plan(options, random.Random(seed))
    data_dir = options.data_dir or Path(tempfile.mkdtemp(prefix="sequences-fault-run-"))
    progress(f"fault run: {options.enrollments:,} enrollments, seed {seed}, data in {data_dir}")
    started = time.monotonic()
    with Stack(stack_config(data_dir, options)) as stack:
        memory = RssSampler(lambda: stack_pids(stack), every=1.0)
        memory.start()
        async with stack.api_client() as api:
            sequence_id = await set_up(api, options.enrollments)
            progress("  stack up, contacts imported; enrolling, faults armed")
            done = asyncio.Event()
            chaos = asyncio.create_task(
                inflict(stack, report.faults, started, report.exited_on_their_own, done))
            try:
                await drive(stack, api, sequence_id, options)
            except Stalled as stall:
                report.stalled = str(stall)
            await until_every_fault_fired(report.faults, chaos)
            done.set()
            await chaos
            await asyncio.sleep(2)  # room for a late duplicate
            await check_statuses(api, sequence_id, report)
        engine = create_engine(stack.database_url, pool_size=2)
        try:
            await check_events(stack, engine, report)
            await check_emails(stack, engine, report)
            await check_rebuild(stack, engine, report)
        finally:
            await engine.dispose()
            await memory.stop()
            report.peak_rss = memory.peaks
    report.seconds = time.monotonic() - started
    if report.passed and options.data_dir is None:
        shutil.rmtree(data_dir, ignore_errors=True)
    elif not report.passed:
        progress(f"data and service logs kept in {data_dir}")
    return report


async def until_every_fault_fired(faults: list[Fault], chaos: asyncio.Task,
                                  timeout: float = 60.0) -> None:
    """Faults fire at email counts below the total: once the work is done they all have, unless
    the run stalled (then give up on the rest after a while)."""
    deadline = time.monotonic() + timeout
    while any(f.fired_at is None for f in faults) and time.monotonic() < deadline:
        if chaos.done():
            await chaos  # raises what went wrong in it
        await asyncio.sleep(0.5)


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.fault_run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--enrollments", type=int, default=Options.enrollments,
                        help="contacts enrolled (default %(default)s)")
    parser.add_argument("--seed", type=int, help="seed of the fault moments (default: random,"
                        " printed, so a run can be repeated)")
    parser.add_argument("--kills", type=int, default=Options.kills,
                        help="SIGKILLs per service (default %(default)s)")
    parser.add_argument("--mailers", type=int, default=Options.mailers,
                        help="mailer replicas (default %(default)s)")
    parser.add_argument("--no-nats-restart", dest="restart_nats", action="store_false")
    parser.add_argument("--no-postgres-restart", dest="restart_postgres", action="store_false")
    parser.add_argument("--nats-cluster", type=int, default=1, metavar="N",
                        help="run NATS as an N-node cluster (stream at R<N>): one node is"
                        " SIGKILLed and restarted, and later the events stream's leader")
    parser.add_argument("--power-cut", action="store_true",
                        help="also kill nats-server as a crash of the machine would: the newest"
                        " part of its events store, not yet fsynced, is lost")
    parser.add_argument("--stall-seconds", type=float, default=Options.stall_seconds,
                        help="give up when nothing moved for this long (default %(default)s)")
    parser.add_argument("--data-dir", type=Path, help="where the stack keeps its data and logs"
                        " (default: a temporary directory, removed when the run passes)")
    args = parser.parse_args(argv)
    return Options(**vars(args))


def main(argv: list[str] | None = None) -> int:
    report = asyncio.run(run(parse_args(argv)))
    print(report.format(), flush=True)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
