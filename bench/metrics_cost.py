"""The cost of metrics (issue 17): the mailer benchmark and the whole-pipeline benchmark, each
with metrics on and off (`SEQUENCES_METRICS=off`) in the same run. Runs alternate off, on, on,
off, so that a machine warming up, or a neighbour's load coming and going, weighs on both
sides; each side's figure is the mean of its runs. With metrics on the pipeline's processes
are scraped every 5 s, as a Prometheus would (the mailer benchmark's lone mailer serves no
/metrics: its instruments and its gauge sampler are what it pays). Target: on / off >= 0.95x.

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


async def run(quick: bool) -> list[Result]:
    return [await _mailer(1_000 if quick else 10_000),
            await _pipeline(300 if quick else 3_000)]


async def _mailer(n: int) -> Result:
    rates: dict[bool, list[float]] = {True: [], False: []}
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
                rates[on].append(found["per_s"])
        finally:
            capture.stop()
    return _compared(f"mailer, {n:,} due email steps -> SMTP -> EmailSent, metrics on", rates)


async def _pipeline(n: int) -> Result:
    rates: dict[bool, list[float]] = {True: [], False: []}
    for on in ORDER:
        common.progress(f"metrics_cost: whole pipeline, metrics {'on' if on else 'off'}")
        [overall, *_] = await pipeline.whole_pipeline(n, None if on else OFF,
                                                      scrape_every=5.0 if on else None)
        rates[on].append(overall.value)
    return _compared(f"whole pipeline, {n:,} enrollments x 3 email steps, metrics on", rates)


def _compared(figure: str, rates: dict[bool, list[float]]) -> Result:
    on, off = statistics.mean(rates[True]), statistics.mean(rates[False])
    common.progress(f"  {figure}: on {on:,.0f} emails/s, off {off:,.0f} emails/s"
                    f" ({on / off:.3f}x); runs on {rates[True]}, off {rates[False]}")
    return Result.compare(figure, on, "emails/s", off, "metrics off (SEQUENCES_METRICS=off)",
                          min_ratio=TARGET, details={
                              "order": ["on" if o else "off" for o in ORDER],
                              "on_runs": [round(r, 1) for r in rates[True]],
                              "off_runs": [round(r, 1) for r in rates[False]]})
