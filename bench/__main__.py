"""Run the benchmarks, print one table and write the results as JSON.

    python -m bench                 every benchmark, full size
    python -m bench --quick         smaller runs (about 2.5 minutes instead of 12), for a first look
    python -m bench --only append   just the named benchmark(s)

Uses an embedded PostgreSQL in a temporary directory, or fresh databases on the server of
DATABASE_URL when it is set. Results go to bench/results/<UTC timestamp>.json and
bench/results/latest.json; progress goes to stderr. The exit status is 1 when a figure missed
its target.

Breakdowns behind suggested changes (not in the registry, they print their own tables):
python -m bench.experiments.single_floor (a single append), .services, .profile_services,
.memory (the services); see bench/experiments/. `python -m bench.fault_run` (`make fault-run`)
is the fault run of the README's "Guarantees", not a benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from importlib.metadata import version
from typing import Awaitable, Callable

from bench import analytics, app_pages, append, common, reply_latency
from bench import calendars, contact_import, contact_timezone, enrollment, mail_classify, mailer, memory, scheduler
from bench import metrics_cost, pipeline, relay_reconcile
from bench import schedule_preview, scheduler_calendars
from bench.common import Result

# name -> benchmark; each returns its figures
BENCHMARKS: dict[str, Callable[[bool], Awaitable[list[Result]]]] = {
    "append": append.run,
    "reply_latency": reply_latency.run,
    "mail_classify": mail_classify.run,
    "scheduler": scheduler.run,
    "calendars": calendars.run,
    "scheduler_calendars": scheduler_calendars.run,
    "schedule_preview": schedule_preview.run,
    "mailer": mailer.run,
    "enrollment": enrollment.run,
    "memory": memory.run,
    "app_pages": app_pages.run,
    "contact_timezone": contact_timezone.run,
    "relay_reconcile": relay_reconcile.run,
    "pipeline": pipeline.run,
    "analytics": analytics.run,
    "contact_import": contact_import.run,
    "metrics_cost": metrics_cost.run,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="benchmarks: " + ", ".join(BENCHMARKS),
    )
    parser.add_argument("--quick", action="store_true",
                        help="smaller runs, for a first look (the figures are noisier)")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), metavar="NAME",
                        help="run only this benchmark (repeatable); one of: "
                        + ", ".join(BENCHMARKS))
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    for name in dict.fromkeys(args.only or BENCHMARKS):
        common.progress(f"benchmark {name} ({'quick' if args.quick else 'full'})")
        for result in await BENCHMARKS[name](args.quick):
            result.benchmark = name
            results.append(result)
    return results


if __name__ == "__main__":
    args = parse_args()
    started = time.perf_counter()
    busy = common.busy_cpus()
    if busy is not None and busy > 0.25:
        common.progress(f"warning: other processes keep {busy:.1f} of {os.cpu_count()} CPUs busy;"
                        " figures will be noisy")
    try:
        results = asyncio.run(main(args))
        info = common.server_info(common.server_url())
    finally:
        common.close()
    print(common.format_table(results))
    path = common.write_json(results, {
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "quick": args.quick,
        "benchmarks": list(dict.fromkeys(args.only or BENCHMARKS)),
        "seconds": round(time.perf_counter() - started, 1),
        "busy_cpus_at_start": None if busy is None else round(busy, 2),
        "postgres": info,
        "versions": {p: version(p) for p in ("eventsourcing", "psycopg", "sqlalchemy", "pydantic")},
    })
    common.progress(f"results written to {path} (and {path.parent / 'latest.json'})")
    sys.exit(1 if any(r.passed is False for r in results) else 0)
