"""Where the time goes in the service benchmarks: py-spy profiles of the real service process
(or of the in-process enrollment code), summarised as inclusive / self shares per function.

    python -m bench.experiments.profile_services mailer [--n 3000] [--seconds 20]
    python -m bench.experiments.profile_services scheduler [--n 60000] [--window 0] [--seconds 20]
    python -m bench.experiments.profile_services rebuild [--events 200000]
    python -m bench.experiments.profile_services bulk [--n 100000]

Profiles (py-spy "raw" collapsed stacks) are kept in bench/results/profiles/.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from bench import common
from bench.service_common import bucket_stacks, nats_server, py_spy, summarize_stacks

OUT = Path(__file__).resolve().parent / "results" / "profiles"

# where a sample goes: the first bucket with a marker in its stack (order matters: the
# specific before the enclosing)
BUCKETS = [
    ("OpenTelemetry spans and context (no exporter configured)",
     ("(trace/", "(propagate/", "(context/", "(baggage/", "_decorator.py", "tracing.py")),
    ("consumer: positions `moved` list (apply_in listcomp)", ("apply_in.<locals>.<listcomp>",)),
    ("relay: outbox -> JetStream (validate, dump, publish)", ("eventlog/relay.py",)),
    ("email: render + build MIME message", ("build_message", "_compose", "mailer/domain.py")),
    ("email: SMTP conversation (aiosmtplib, flattening)", ("aiosmtplib",)),
    ("EventStore.append (envelopes, INSERT or COPY)", ("EventStore.append",)),
    ("EventStore.read_all (SELECT, envelopes)", ("EventStore.read_all",)),
    ("decode events (pydantic)", ("decode_event", "_upcast")),
    ("projection handlers (enrollment read models)", ("enrollment/projections.py",)),
    ("mailer handler: its DB statements, the rest", ("mailer/sending.py", "mailer/handlers.py",
                                                      "mailer/batch_plan.py", "mailer/smtp_sends.py",
                                                      "mailer/batch_record.py")),
    ("scheduler firing: claim, StepDue models, mark", ("scheduler/handlers.py",)),
    ("enrollment commands (candidates, admission, events)", ("enrollment/handlers.py",)),
    ("consumer: fetch, positions, ack", ("messaging/consumer.py",)),
    ("NATS client", ("nats/aio/", "nats/js/")),
    ("DB driver + SQLAlchemy, caller not visible (greenlet)", ("psycopg", "sqlalchemy")),
    ("asyncio event loop", ("asyncio/", "selectors.py")),
]


async def _mailer(args) -> Path:
    from bench import mailer

    out = OUT / f"mailer-{time.strftime('%Y%m%dT%H%M%S')}.txt"
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as root, \
            tempfile.TemporaryDirectory() as logs, nats_server("mailer") as server:
        capture = mailer.Capture(Path(root), Path(logs))
        capture.start()
        try:
            result = await mailer._end_to_end("profiled", args.n, server.url, capture,
                                              Path(logs), verify=True,
                                              profile=(out, args.seconds))
        finally:
            capture.stop()
    common.progress(f"mailer: {result['per_s']:.0f} emails/s; cpu {result}")
    return out


async def _scheduler(args) -> Path:
    from bench import scheduler

    out = OUT / f"scheduler-{time.strftime('%Y%m%dT%H%M%S')}.txt"
    env = {"SCHEDULER_MAX_RATE": "1000000"} if args.unthrottled else None
    with tempfile.TemporaryDirectory() as logs, nats_server("scheduler") as server:
        run = await scheduler._scenario("profiled", server, Path(logs), args.n, args.window,
                                        env, profile=(out, args.seconds))
    common.progress(f"scheduler: {run.details()}")
    return out


async def _in_process(work, name: str, seconds: float) -> Path:
    out = OUT / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.txt"
    spy = None

    async def start_spy():
        nonlocal spy
        spy = py_spy(os.getpid(), seconds, out)

    await work(start_spy)
    if spy is not None:
        await asyncio.to_thread(spy.wait)
    return out


async def _rebuild(args) -> Path:
    from bench import enrollment
    from sequences.clock import SystemClock
    from sequences.db import create_engine
    from sequences.eventlog.store import EventStore
    from sequences.projections import rebuild
    from services.enrollment.projections import PROJECTION

    async def work(start_spy):
        url = await enrollment.migrated_database("rebuild", enrollment.MIGRATIONS)
        written, _ = await asyncio.to_thread(enrollment._write_events, url, args.events)
        engine = create_engine(url)
        try:
            await start_spy()
            began = time.perf_counter()
            replayed = await rebuild(engine, EventStore(SystemClock()), PROJECTION)
            seconds = time.perf_counter() - began
            common.progress(f"rebuild: {replayed:,} of {written:,} in {seconds:.1f} s ="
                            f" {replayed / seconds:,.0f} events/s")
        finally:
            await engine.dispose()

    return await _in_process(work, "rebuild", args.seconds)


async def _bulk(args) -> Path:
    from bench import enrollment

    async def work(start_spy):
        await start_spy()
        await enrollment._bulk_enroll(args.n, quick=False)

    return await _in_process(work, "bulk", args.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.experiments.profile_services")
    sub = parser.add_subparsers(dest="what", required=True)
    f = sub.add_parser("summarize", help="summarise a profile recorded earlier")
    f.add_argument("file", type=Path)
    m = sub.add_parser("mailer")
    m.add_argument("--n", type=int, default=3000)
    m.add_argument("--seconds", type=float, default=20)
    s = sub.add_parser("scheduler")
    s.add_argument("--n", type=int, default=60_000)
    s.add_argument("--window", type=float, default=0.0)
    s.add_argument("--seconds", type=float, default=20)
    s.add_argument("--unthrottled", action="store_true")
    r = sub.add_parser("rebuild")
    r.add_argument("--events", type=int, default=200_000)
    r.add_argument("--seconds", type=float, default=20)
    b = sub.add_parser("bulk")
    b.add_argument("--n", type=int, default=100_000)
    b.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--focus", help="only stacks through a frame containing this text")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.what == "summarize":
        print(summarize_stacks(args.file, args.top, args.focus))
        print("by part:\n" + bucket_stacks(args.file, BUCKETS))
        return
    run = {"mailer": _mailer, "scheduler": _scheduler, "rebuild": _rebuild, "bulk": _bulk}
    try:
        out = asyncio.run(run[args.what](args))
    finally:
        common.close()
    print(f"profile: {out}")
    print(summarize_stacks(out, args.top, args.focus))
    print("by part:\n" + bucket_stacks(out, BUCKETS))


if __name__ == "__main__":
    main()
