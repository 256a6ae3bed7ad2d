"""CSV import (issue 12, "Measure"): 100,000 contacts as one CSV upload through the API, under
10 s, against a raw `COPY` of the same file in the same run.

How it runs: the dev stack (every service its own process, as `make up` runs them) on the
benchmark's PostgreSQL; the CSV is the one `app_pages` imports (name, company, email, tags).
Timed: from the upload to the API's answer (the contacts are then in the log and in the contact
list); and from the upload until every durable consumer has handled every event it reads (the
fan-out the import causes, which competes with it for the same two cores). Meanwhile the CPU
seconds of every process (services, nats-server, PostgreSQL with its backends) are counted, so
the cost per contact shows where it goes. Then the same file is imported again: nothing is
created twice (the import upserts by email, so a retried chunk or a repeated import doubles
nothing), every row answered unchanged, timed too. The gateway's peak RSS is sampled
throughout (target under 150 MB).

N = 100,000 contacts; --quick: 10,000. `BENCH_PROFILE=webhooks,enrollment` (service names) also
samples those processes with py-spy from the upload until settled, and prints where their time
went (profiles in bench/results/profiles/).

    python -m bench --only contact_import [--quick]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx

from bench import common
from bench.app_pages import TARGET_IMPORT_S, TARGET_RSS_MB, _csv, _raw_copy_seconds, _stack
from bench.common import Result
from bench.service_common import (MB, CpuMeter, RssSampler, postmaster_pid,
                                  report_profiles, start_profiles, until_settled)
from sequences.db import create_engine
from sequences.devstack.stack import Stack


async def _import(api: httpx.AsyncClient, data: bytes) -> tuple[float, dict]:
    began = time.perf_counter()
    answer = await api.post("/v1/contacts/import", headers={"content-type": "text/csv"},
                            content=data)
    took = time.perf_counter() - began
    return took, answer.raise_for_status().json()


def _processes(stack: Stack) -> dict[str, int]:
    processes = dict(stack.service_pids())
    if (nats := stack.nats.pid) is not None:
        processes["nats"] = nats
    if (postgres := postmaster_pid(stack.database_url)) is not None:
        processes["postgres"] = postgres
    return processes


async def _measured(stack: Stack, n: int) -> list[Result]:
    data = _csv(n)
    engine = create_engine(stack.database_url, pool_size=1)
    cpu = CpuMeter(_processes(stack), trees=("postgres",))
    try:
        async with stack.api_client(timeout=600) as api:
            common.progress(f"contact_import: importing {n:,} contacts (one CSV upload)")
            profiles = start_profiles(stack, "contact_import")
            cpu.start()
            began = time.perf_counter()
            took, report = await _import(api, data)
            if report["created"] != n or report["failed"]:
                raise RuntimeError(f"contact_import: the import answered {str(report)[:300]}")
            common.progress(f"  answered in {took:.1f} s ({n / took:,.0f} rows/s);"
                            " waiting for every consumer")
            levels = await until_settled(stack.env()["NATS_URL"], engine, timeout=900)
            if not levels.settled:
                raise RuntimeError(f"contact_import: the consumers did not catch up: {levels}")
            settled = time.perf_counter() - began
            used = cpu.stop()
            common.progress(f"  settled after {settled:.1f} s; CPU {used}")
            report_profiles(profiles, "contact_import")

            common.progress("contact_import: importing the same file again")
            again, repeated = await _import(api, data)
            if repeated["created"] or repeated["unchanged"] != n:
                raise RuntimeError(f"contact_import: the repeat answered {str(repeated)[:300]}")
    finally:
        await engine.dispose()
    raw = _raw_copy_seconds(stack.database_url, data)
    common.progress(f"  repeat {again:.1f} s; raw COPY {raw:.2f} s")
    per_contact = {name.removesuffix("_cpu_s") + "_us": round(seconds / n * 1e6)
                   for name, seconds in used.items() if name.endswith("_cpu_s")}
    details = {"rows": n, "rows_per_s": round(n / took), "raw_rows_per_s": round(n / raw),
               "settled_s": round(settled, 2), "cpu": used, "cpu_us_per_contact": per_contact,
               "cpu_us_per_contact_total": sum(per_contact.values())}
    return [
        Result(f"CSV import of {n:,} contacts through the API ({n / took:,.0f} rows/s)", took,
               "s", raw, f"raw COPY, {n / raw:,.0f} rows/s", took / raw,
               f"< {TARGET_IMPORT_S} s", took < TARGET_IMPORT_S, details=details),
        Result(f"the same, until every consumer has handled every event"
               f" ({sum(per_contact.values()):,} CPU-us a contact)", settled, "s", raw,
               "raw COPY", settled / raw, "-", None, details=per_contact),
        Result(f"the same file again: {n:,} unchanged, none created", again, "s", raw,
               "raw COPY", again / raw, "-", None),
    ]


async def run(quick: bool) -> list[Result]:
    n = 10_000 if quick else 100_000
    with tempfile.TemporaryDirectory(prefix="sequences-bench-import-") as temp:
        with _stack(Path(temp)) as stack:
            sampler = RssSampler(lambda: {"gateway": stack.service_pids()["gateway"]})
            sampler.start()
            try:
                results = await _measured(stack, n)
            finally:
                await sampler.stop()
    samples = [rss for _, rss in sampler.samples.get("gateway", [])]
    start, peak = samples[0] / MB, max(samples) / MB
    return [*results, Result(
        f"gateway peak RSS, importing {n:,} contacts twice", peak, "MB", start, "at start",
        peak / start, f"< {TARGET_RSS_MB} MB", peak < TARGET_RSS_MB,
        details={"start_mb": round(start, 1), "end_mb": round(samples[-1] / MB, 1)})]
