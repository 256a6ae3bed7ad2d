"""The cost of metrics (issue 17): the mailer benchmark and the whole-pipeline benchmark, each
with metrics on and off (`SEQUENCES_METRICS=off`) in the same run. Runs alternate off, on, on,
off, so that a machine warming up, or a neighbour's load coming and going, weighs on both
sides; each side's figure is the mean of its runs. With metrics on the pipeline's processes
are scraped every 5 s, as a Prometheus would (the mailer benchmark's lone mailer serves no
/metrics: its instruments and its gauge sampler are what it pays). Target: on / off >= 0.95x.

Two figures each: emails per second (wall time: what users feel, and what a busy machine
disturbs most) and emails per CPU second (the mailer's own CPU; for the pipeline every
service, nats-server and PostgreSQL together), which other load on the machine disturbs less.

    python -m bench --only metrics_cost [--quick]   mailer 10,000 emails (1,000), pipeline
                                                    3,000 enrollments x 3 steps (300)
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from bench import common, mailer, pipeline
from bench.common import Result
from bench.mailer import Capture
from bench.service_common import nats_server

TARGET = 0.95
ORDER = (False, True, True, False)  # metrics on?
OFF = {"SEQUENCES_METRICS": "off"}

# per side (metrics on?): emails/s of each run, emails per CPU second of each run
Runs = dict[bool, dict[str, list[float]]]


def _runs() -> Runs:
    return {on: {"per_s": [], "per_cpu_s": []} for on in (True, False)}


async def run(quick: bool) -> list[Result]:
    return [*await _mailer(1_000 if quick else 10_000),
            *await _pipeline(300 if quick else 3_000)]


async def _mailer(n: int) -> list[Result]:
    runs = _runs()
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(prefix="sequences-bench-metrics-",
                                     dir=shm if shm.is_dir() else None) as mail_root, \
            tempfile.TemporaryDirectory(prefix="sequences-bench-metrics-logs-") as logs, \
            nats_server("metrics_cost") as server:
        capture = Capture(Path(mail_root), Path(logs))
        capture.start()
        try:
            for on in ORDER:
                found = await mailer._end_to_end(
                    f"metrics {'on' if on else 'off'}", n, server.url, capture, Path(logs),
                    verify=True, extra_env=None if on else OFF)
                runs[on]["per_s"].append(found["per_s"])
                runs[on]["per_cpu_s"].append(n / found["mailer_cpu_s"])
        finally:
            capture.stop()
    return _compared(f"mailer, {n:,} due email steps -> SMTP -> EmailSent", "the mailer's", runs)


async def _pipeline(n: int) -> list[Result]:
    runs = _runs()
    for on in ORDER:
        common.progress(f"metrics_cost: whole pipeline, metrics {'on' if on else 'off'}")
        [overall, *_] = await pipeline.whole_pipeline(n, None if on else OFF,
                                                      scrape_every=5.0 if on else None)
        cpu = sum(overall.details["cpu_s"].values())  # every process's, in the steps
        runs[on]["per_s"].append(overall.value)
        runs[on]["per_cpu_s"].append(overall.details["emails"] / cpu)
    return _compared(f"whole pipeline, {n:,} enrollments x 3 email steps",
                     "all processes'", runs)


def _compared(figure: str, whose_cpu: str, runs: Runs) -> list[Result]:
    results = []
    for key, unit, what in (("per_s", "emails/s", ""),
                            ("per_cpu_s", "emails/CPU s", f", per {whose_cpu} CPU second")):
        on, off = statistics.mean(runs[True][key]), statistics.mean(runs[False][key])
        common.progress(f"  {figure}{what}: metrics on {on:,.1f}, off {off:,.1f}"
                        f" ({on / off:.3f}x); runs on {runs[True][key]}, off {runs[False][key]}")
        results.append(Result.compare(
            f"{figure}{what}, metrics on", on, unit, off, "metrics off (SEQUENCES_METRICS=off)",
            min_ratio=TARGET, details={
                "order": ["on" if o else "off" for o in ORDER],
                "on_runs": [round(r, 1) for r in runs[True][key]],
                "off_runs": [round(r, 1) for r in runs[False][key]]}))
    return results
