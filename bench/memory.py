"""Memory: every service's resident memory while 100,000 active enrollments go through a step.

The issue: "with 100,000 active enrollments, each service's RSS stays flat over the run (no
growth per processed event) and under 150 MB; a benchmark that enrolls 100k, drives them through
a step, samples every service's RSS and reports start/peak/end per service with the growth."

How it runs: the dev stack (sequences/devstack/stack.py) on the benchmark's PostgreSQL, every
service its own process. N contacts are imported through the API (one CSV upload, which the
gateway sends on in chunks), a sequence is created whose first step is a call, N enrollments are
made by one bulk request, and each one is driven through that step: planned and fired by the
scheduler, turned into a task by the mailer, shown as an open task by the enrollment service,
and the enrollment stays active. A call step rather than an email step, so 100,000 enrollments
go through it in minutes (the mailer's SMTP path, about 150 emails/s, is measured with its
memory by the `mailer` benchmark); every service still handles every event of every enrollment
(ContactCreated, ContactEnrolled, StepScheduled, StepDue, TaskDue), the gateway the upload.

RSS of every service process is sampled every 0.5 s from the moment the stack is ready ("start",
idle) until every consumer has handled every event ("end"). Growth is end minus start; "late
growth" is the RSS at the end minus the RSS when half of the enrollments had their task: memory
that keeps growing with the events handled shows there, a cache filled once does not.

N = 100,000; --quick: 2,000.

    python -m bench --only memory [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

import psutil
from sqlalchemy import text

from bench import common
from bench.common import Result
from bench.service_common import MB, RssSampler, until_settled
from sequences.db import create_engine
from sequences.devstack.stack import Stack, StackConfig

LIMIT_MB = 150
LATE_GROWTH_MB = 10  # what "flat" allows over the second half: allocator noise, not per event
TAG = "memory"
STALL_SECONDS = 300


def _stack(data_dir: Path) -> Stack:
    return Stack(StackConfig(data_dir=data_dir, gateway_port=0, nats_port=0, smtp_port=0,
                             mail_viewer_port=0, log_to_files=True,
                             database_url=common.fresh_database("memory")))


def _sequence() -> dict:
    return {"name": "memory", "sender_name": "Bench", "sender_email": "bench@sales.example",
            "timezone": "UTC", "send_policy": {"mode": "as_soon_as_due"},
            "steps": [{"channel": "call", "wait_days": 0, "body": "Call {{고객명}}"}]}


async def _enroll(stack: Stack, n: int) -> str:
    """N contacts imported and enrolled through the API; returns the sequence id."""
    rows = "\n".join(f"고객{i},회사{i},m{i}@{TAG}.example,{TAG}" for i in range(n))
    async with stack.api_client(timeout=600) as api:
        common.progress(f"memory: importing {n:,} contacts")
        imported = await api.post("/v1/contacts/import", headers={"content-type": "text/csv"},
                                  content=f"name,company,email,tags\n{rows}\n".encode())
        imported.raise_for_status()
        sequence = await api.post("/v1/sequences", json=_sequence())
        sequence.raise_for_status()
        sequence_id = sequence.json()["id"]
        common.progress(f"memory: enrolling {n:,} contacts")
        enrolled = await api.post(f"/v1/sequences/{sequence_id}/enrollments/bulk",
                                  json={"segment": {"tag": TAG}})
    # 503: the gateway stopped waiting (10 s) while the enrollment service still works on it;
    # the enrollments then show up in the read model (waited for next), so no repeat is sent
    if enrolled.status_code == 503:
        common.progress(f"  the bulk request answered 503 after {enrolled.elapsed.total_seconds():.0f} s")
    elif enrolled.status_code != 200 or enrolled.json()["enrolled"] != n:
        raise RuntimeError(f"bulk enrollment: {enrolled.status_code} {enrolled.text[:300]}")
    return sequence_id


async def _until_tasks(engine, sequence_id: str, n: int, sampler: RssSampler) -> float:
    """Until every enrollment has its open task; returns the sampler's time when half had."""
    ticker = common.Ticker("enrollments through the step", n, unit="enrollments")
    halfway, last, moved = None, -1, time.monotonic()
    while True:
        async with engine.connect() as conn:
            done = (await conn.execute(text(
                "SELECT count(*) FROM enrollment.tasks WHERE sequence_id = :s AND state = 'open'"),
                {"s": sequence_id})).scalar_one()
        if halfway is None and done >= n / 2:
            halfway = sampler.seconds()
        if done >= n:
            return halfway
        if done != last:
            last, moved = done, time.monotonic()
        elif time.monotonic() - moved > STALL_SECONDS:
            raise RuntimeError(f"memory: {done:,} of {n:,} tasks, none more in {STALL_SECONDS} s")
        ticker.tick(done)
        await asyncio.sleep(1)


def _cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds each service used since it started (where the time of the run went)."""
    used = {}
    for label, pid in pids.items():
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            used[label] = round(times.user + times.system, 1)
    return used


def _figures(sampler: RssSampler, halfway: float, end: float, n: int,
             cpu: dict[str, float]) -> list[Result]:
    results = []
    for label, samples in sorted(sampler.samples.items()):
        start, last = samples[0][1], samples[-1][1]
        peak = max(rss for _, rss in samples)
        at_half = (sampler.between(label, halfway, end) or [last])[0]
        details = {"start_mb": round(start / MB, 1), "peak_mb": round(peak / MB, 1),
                   "end_mb": round(last / MB, 1), "growth_mb": round((last - start) / MB, 1),
                   "late_growth_mb": round((last - at_half) / MB, 1), "samples": len(samples),
                   "enrollments": n, "cpu_s": cpu.get(label)}
        common.progress(f"  {label}: {details}")
        results.append(Result(
            f"{label} peak RSS, {n:,} enrollments through a step (end"
            f" {last / MB:.0f} MB, growth {(last - start) / MB:+.0f} MB)",
            peak / MB, "MB", start / MB, "at start", peak / start,
            f"< {LIMIT_MB} MB, late growth < {LATE_GROWTH_MB} MB",
            peak / MB < LIMIT_MB and (last - at_half) / MB < LATE_GROWTH_MB, details=details))
    return results


async def run(quick: bool) -> list[Result]:
    n = 2_000 if quick else 100_000
    with tempfile.TemporaryDirectory(prefix="sequences-bench-memory-") as temp:
        with _stack(Path(temp)) as stack:
            sampler = RssSampler(stack.service_pids)
            sampler.start()
            engine = create_engine(stack.database_url, pool_size=1)
            try:
                began = time.perf_counter()
                sequence_id = await _enroll(stack, n)
                halfway = await _until_tasks(engine, sequence_id, n, sampler)
                levels = await until_settled(stack.env()["NATS_URL"], engine, timeout=120)
                end = sampler.seconds()
                await sampler.stop()
                cpu = _cpu_seconds(stack.service_pids())
            finally:
                await engine.dispose()
    if not levels.settled:
        raise RuntimeError(f"memory: the consumers did not catch up: {levels}")
    common.progress(f"memory: {n:,} enrollments through the step in"
                    f" {time.perf_counter() - began:.0f} s")
    return _figures(sampler, halfway, end, n, cpu)
