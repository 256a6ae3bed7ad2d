"""The whole pipeline as users feel it (issue 18): N contacts enrolled into a sequence of three
email steps on the dev stack, every service its own process, no faults (the fault run's driver
with none armed). Emails/s per step (from the moment a step can go, the bulk enrollment or the
clock move, until every enrollee has sent it) and overall (the three steps' time together: from
the first enrollment to the last enrollee Done, without the raw runs between the steps); the
time the consumers that lag took to catch up after each step. Against a raw baseline in the
same run: aiosmtplib over 8 connections sending the same number of prebuilt messages to the
same capture server, once before the first step (every service up and idle, after an uncounted
warm-up run) and once after each step (every consumer caught up). A step's baseline is the
mean of the runs on either side of it, the whole pipeline's the median of the four: this
machine's speed moved by 3x between runs minutes apart (raw runs of 520 and of 2,280 emails/s
on one day, quiet), so a step is compared with what the machine did around it. Also the CPU
milliseconds per email of each process in the steps (each service, nats-server, PostgreSQL
with its backends), the event deliveries per email (events each durable consumer reads, summed
over consumers), PostgreSQL's transactions and rows written per email, and the peak RSS of
every service process (< 150 MB each, issue 18) and of nats-server, from the stack's start to
the end (the import and the raw runs included).

    python -m bench --only pipeline [--quick]      3,000 enrollments (300 with --quick)

`BENCH_PROFILE=scheduler,thread-watcher` (service names) samples those processes with py-spy
while the emails go out and prints where their time went (bench/results/profiles/).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import text

from bench.common import Result, progress
from bench.fault_run import TAG, WAITS, Options, Progress, move_clock, set_up, stack_config
from bench.mailer import _prebuilt, _raw_smtp
from bench.service_common import (CpuMeter, RssSampler, event_levels, peak_rss_results,
                                  postmaster_pid, report_profiles, stack_pids,
                                  start_profiles, until_settled)
from sequences.db import create_engine
from sequences.devstack.stack import Stack
from sequences.services import SERVICES

TARGET = 0.25  # of raw SMTP over 8 connections (issue 18)
RAW = "aiosmtplib, 8 connections, same capture server, median of runs around the steps"
RAW_AROUND = "the same, mean of the runs before and after this step"


async def run(quick: bool) -> list[Result]:
    return await whole_pipeline(300 if quick else 3000)


async def whole_pipeline(n: int, service_env: dict[str, str] | None = None,
                         scrape_every: float | None = None) -> list[Result]:
    """One run on a stack of its own; `service_env` is added to every service's environment
    (bench/metrics_cost.py turns metrics off with it); `scrape_every` seconds, every process's
    /metrics is read meanwhile, as Prometheus would."""
    emails = n * len(WAITS)
    data_dir = Path(tempfile.mkdtemp(prefix="sequences-bench-pipeline-"))
    options = Options(enrollments=n, kills=0, mailers=1, restart_nats=False,
                      restart_postgres=False, data_dir=data_dir)
    progress(f"pipeline: {n:,} enrollments x {len(WAITS)} email steps, data in {data_dir}")
    config = stack_config(data_dir, options)
    config.service_env = {name: dict(service_env or {}) for name in SERVICES}
    try:
        with Stack(config) as stack:
            memory = RssSampler(lambda: stack_pids(stack), every=1.0)
            memory.start()
            async with stack.api_client() as api:
                sequence_id = await set_up(api, n)
                scraping = asyncio.create_task(_scrape(stack, scrape_every)) \
                    if scrape_every else None
                try:
                    results = await _measured(stack, api, sequence_id, n)
                finally:
                    await memory.stop()
                    if scraping is not None:
                        scraping.cancel()
            return results + peak_rss_results(memory, f"{n:,} enrollments")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def _raw_rates(stack: Stack, emails: int, when: str, runs: int = 1
                     ) -> list[tuple[float, float | None]]:
    """Raw SMTP over 8 connections, `runs` times: (emails/s, the machine's busy cores meanwhile:
    this client and the capture server, and whatever else ran)."""
    rates = []
    for _ in range(runs):
        meter = CpuMeter({})
        meter.start()
        rate = emails / await _raw_smtp(stack.smtp_port, _prebuilt(emails))
        busy = meter.stop().get("machine_busy_cores")
        rates.append((rate, busy))
        progress(f"pipeline: raw SMTP {rate:,.0f} emails/s over 8 connections ({when};"
                 f" machine busy {busy} cores)")
    return rates


async def _scrape(stack: Stack, every: float) -> None:
    urls = [f"http://127.0.0.1:{port}/metrics" for port in stack.health_ports.values()]
    urls.append(f"{stack.gateway_url}/metrics")
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            for url in urls:
                with contextlib.suppress(httpx.HTTPError):
                    await client.get(url)
            await asyncio.sleep(every)


async def _measured(stack: Stack, api, sequence_id: str, n: int) -> list[Result]:
    """Each step from the moment it can go (the bulk enrollment, the clock move) until every
    enrollee has sent it (the last step: is Done), with a raw SMTP run before the first step
    and after each, once every consumer has caught up: a step's baseline is the raw run on
    either side of it (this machine's speed moved by 3x between runs minutes apart), the whole
    pipeline's the median of the four."""
    emails = n * len(WAITS)
    engine = create_engine(stack.database_url, pool_size=2)
    nats_url = stack.env()["NATS_URL"]
    try:
        await until_settled(nats_url, engine, timeout=120)  # the import handled everywhere
        before = await event_levels(nats_url, engine)
        # with every service up and idle, after a warm-up run not counted (the first run of the
        # capture server and this client made 1,000-1,250 emails/s, the next 1,800-1,950)
        await _raw_smtp(stack.smtp_port, _prebuilt(min(emails, 3000)))
        raws = await _raw_rates(stack, emails, "before step 1")  # then one after each step
        rows_before = await _row_writes(engine)
        cpu = CpuMeter({**stack.service_pids(), "nats-server": stack.nats.pid,
                        "postgres": postmaster_pid(stack.database_url)}, trees=("postgres",))
        tracker = Progress(stack, sequence_id)
        profiles = start_profiles(stack, "pipeline")
        cpu.start()
        steps, lags, laps, offset = [], [], [], timedelta()
        for step, wait in enumerate(WAITS, start=1):
            cpu.lap()  # (the services' idle time during the raw run is no step's)
            started = time.perf_counter()
            if step == 1:
                (await api.post(f"/v1/sequences/{sequence_id}/enrollments/bulk",
                                json={"segment": {"tag": TAG}})).raise_for_status()
            else:
                offset += timedelta(days=wait, minutes=1)
                await move_clock(stack, offset)
            # looked at often: a quick run's step takes a few seconds
            await tracker.until(step, n, stall_seconds=180, every=0.2)
            steps.append(time.perf_counter() - started)
            # the consumers that lag (the thread-watcher's, the analytics) catch up before the
            # raw run: their work is the step's CPU, and the time it took is reported apart
            await until_settled(nats_url, engine, timeout=120, every=0.2)
            lags.append(time.perf_counter() - started - steps[-1])
            laps.append(cpu.lap())
            progress(f"pipeline: step {step} in {steps[-1]:.1f} s (+{lags[-1]:.1f} s until every"
                     f" consumer was done), CPU ms an email: "
                     f"{ {name: round(s / n * 1e3, 2) for name, s in laps[-1].items()} }")
            raws += await _raw_rates(stack, emails, f"after step {step}")
        used = {name: round(sum(lap[name] for lap in laps), 2) for name in laps[0]}
        report_profiles(profiles, "pipeline")
        await tracker.engine.dispose()
        after = await event_levels(nats_url, engine)
        await asyncio.sleep(1.5)  # backends report their table statistics within a second
        rows_after = await _row_writes(engine)
    finally:
        await engine.dispose()
    deliveries = sum(log for log, _ in after.consumers.values()) \
        - sum(log for log, _ in before.consumers.values())
    cpu_per_email = {name: round(seconds / emails * 1e3, 3) for name, seconds in used.items()}
    raw = statistics.median(rate for rate, _ in raws)
    details = {"enrollments": n, "emails": emails, "events": after.in_log - before.in_log,
               "cpu_ms_per_email": cpu_per_email, "cpu_s": used, "step_seconds": steps,
               "lag_seconds": lags,
               "cpu_ms_per_email_by_step": [{name: round(s / n * 1e3, 3) for name, s in lap.items()}
                                            for lap in laps],
               "raw_emails_per_s": [round(rate) for rate, _ in raws],
               "raw_machine_busy_cores": [busy for _, busy in raws]}
    results = [Result.compare("whole pipeline, first enrollment to last Done (3 steps)",
                              emails / sum(steps), "emails/s", raw, RAW,
                              min_ratio=TARGET, details=details)]
    results += [Result.compare(f"step {i}", n / seconds, "emails/s",
                               (raws[i - 1][0] + raws[i][0]) / 2, RAW_AROUND)
                for i, seconds in enumerate(steps, start=1)]
    results.append(Result("after a step's last email, until every consumer is done",
                          statistics.mean(lags), "s", details={"each step": lags}))
    results.append(Result("events per email", (after.in_log - before.in_log) / emails,
                          "events", details=details))
    results.append(Result("event deliveries per email (summed over consumers)",
                          deliveries / emails, "deliveries", details=details))
    results += [Result(f"CPU per email: {name}", ms, "ms") for name, ms in
                sorted(cpu_per_email.items(), key=lambda item: -item[1])]
    written = {table: (after_n - rows_before.get(table, 0)) / emails
               for table, after_n in rows_after.items()}
    results.append(Result("PostgreSQL transactions per email", written.pop("(commits)"), "",
                          details={"rows written per email, by table": {
                              t: round(n, 2) for t, n in sorted(written.items(),
                                                                key=lambda i: -i[1]) if n}}))
    results += [Result(f"rows written per email: {table}", n, "rows")
                for table, n in sorted(written.items(), key=lambda i: -i[1])[:6]]
    return results


async def _row_writes(engine) -> dict[str, int]:
    """Rows inserted, updated or deleted so far in each table (row locks are not counted), and
    the database's commits, as PostgreSQL's statistics have them: where its CPU goes."""
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT schemaname || '.' || relname, n_tup_ins + n_tup_upd + n_tup_del"
            " FROM pg_stat_user_tables"))).all()
        commits = (await conn.execute(text(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))
                   ).scalar_one()
    return {**dict(rows), "(commits)": commits}
