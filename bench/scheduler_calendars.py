"""The scheduler's firing benchmarks with sending calendars on vs off, in the same run (issue
14: "lateness p99 and burst time within 1.2x of the same benchmark with them off").

Each scenario of `bench/scheduler.py` twice on the same nats-server, each time on a fresh
database and a fresh scheduler process: off = a sequence "as soon as due" in its own zone with
no holidays (what `--only scheduler` runs); on = a Mon-Fri 09:00-11:30 + 14:00-17:00 window,
business-day waits, KR holidays, workspace skip dates and each contact in one of 24 zones
(`bench/calendars.py`'s settings). The due moments are the scenario's (a calendar decides when
a step is due when it is planned; the firing path reads `due_at` alone), so what is compared is
whether the calendar-shaped rows cost the firing path anything:

* a burst: N due at one instant (a window's opening), time until every StepDue is published;
* N due within one minute: lateness p99;
* 1,000 due per second: lateness p99;
* and for each, the scheduler's CPU time per 1,000 steps (on a shared machine the wall times
  move with the others' load; the CPU a step costs hardly does).

Each setting runs twice, in the order off, on, on, off (the load of a shared machine drifts);
a figure pools both runs of its setting. Ratio = on / off; target <= 1.2x. Planning cost (where calendars do work) is `--only
calendars`.

    python -m bench --only scheduler_calendars [--quick]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench import common
from bench.common import Result
from bench.scheduler import STEADY_RATE, Run, _scenario
from bench.service_common import nats_server, percentile

WITHIN = 1.2  # on / off


async def _pair(label: str, server, log_dir: Path, n: int, window: float
                ) -> tuple[list[Run], list[Run]]:
    """off, on, on, off: the machine's load drifts over the minutes a scenario takes (these
    machines are shared), and this order puts both settings as much early as late."""
    runs: dict[bool, list[Run]] = {False: [], True: []}
    for calendars in (False, True, True, False):
        name = f"{label}, calendars {'on' if calendars else 'off'}"
        runs[calendars].append(await _scenario(name, server, log_dir, n, window,
                                               calendars=calendars))
    return runs[False], runs[True]


def _compared(figure: str, on: float, unit: str, off: float,
              runs: tuple[list[Run], list[Run]]) -> Result:
    ratio = on / off if off else None
    return Result(figure, on, unit, off, "calendars off", ratio, f"<= {WITHIN:g}x",
                  ratio is not None and ratio <= WITHIN,
                  details={"off": [r.details() for r in runs[0]],
                           "on": [r.details() for r in runs[1]]})


def _mean_burst(runs: list[Run]) -> float:
    return sum(r.all_published_after_start for r in runs) / len(runs)


def _cpu_per_1k(runs: list[Run]) -> float:
    """The scheduler's CPU milliseconds per 1,000 steps over both runs: what the calendars
    could cost the firing path, and unlike wall times hardly moved by other work on the
    machine (the wall figures above are, by as much as 5x at a load of 8)."""
    return 1e6 * sum(r.cpu_seconds for r in runs) / sum(r.n for r in runs)


def _p99_ms(runs: list[Run]) -> float:
    """Over both runs' steps together."""
    return percentile([late for r in runs for late in r.lateness], 99) * 1000


async def run(quick: bool) -> list[Result]:
    n = 10_000 if quick else 100_000
    minute = 6.0 if quick else 60.0  # quick: the same due rate as the full run
    steady_seconds = 8.0 if quick else 60.0
    results = []
    with tempfile.TemporaryDirectory(prefix="sequences-bench-calsched-") as temp, \
            nats_server("scheduler") as server:
        log_dir = Path(temp)
        burst = await _pair(f"{n:,} due at one instant", server, log_dir, n, 0.0)
        results.append(_compared(
            f"scheduler, {n:,} due at one instant: all StepDue published after the due moment,"
            " calendars on (mean of two runs)", _mean_burst(burst[1]), "s",
            _mean_burst(burst[0]), burst))
        spread = await _pair(f"{n:,} due within {minute:g} s", server, log_dir, n, minute)
        results.append(_compared(
            f"scheduler, {n:,} due within {minute:g} s: lateness p99 of two runs, calendars on",
            _p99_ms(spread[1]), "ms", _p99_ms(spread[0]), spread))
        steady_n = int(STEADY_RATE * steady_seconds)
        steady = await _pair(f"{STEADY_RATE:,}/s for {steady_seconds:g} s", server, log_dir,
                             steady_n, steady_seconds)
        results.append(_compared(
            f"scheduler, {STEADY_RATE:,} due/s for {steady_seconds:g} s: lateness p99 of two"
            " runs, calendars on", _p99_ms(steady[1]), "ms", _p99_ms(steady[0]), steady))
    for label, runs in (("due at one instant", burst), (f"due within {minute:g} s", spread),
                        (f"{STEADY_RATE:,} due/s", steady)):
        results.append(_compared(
            f"scheduler, {label}: scheduler CPU per 1,000 steps, calendars on",
            _cpu_per_1k(runs[1]), "ms", _cpu_per_1k(runs[0]), runs))
    common.progress("scheduler_calendars: done")
    return results
