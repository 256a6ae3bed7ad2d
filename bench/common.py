"""What every benchmark shares: a PostgreSQL to run against, the result record, the report.

The server is started once per process, on first use: an embedded PostgreSQL (pgserver) in a
temporary directory, or the server `DATABASE_URL` points at, on which every benchmark gets fresh
databases (dropped again by `close()`). Progress goes to stderr; the table and JSON are the
results.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from sequences.devstack.postgres import EmbeddedPostgres, create_database, drop_database

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# the workspace of events benchmarks append straight to the log
BENCH_WORKSPACE = uuid.UUID("00000000-0000-4000-8000-0000000000be")

_started = time.perf_counter()


def progress(message: str) -> None:
    """One line of progress on stderr, with the seconds since the run started."""
    print(f"[{time.perf_counter() - _started:7.1f}s] {message}", file=sys.stderr, flush=True)


class Ticker:
    """Progress of a long loop, at most every `every` seconds: `tick(done)` inside the loop."""

    def __init__(self, label: str, total: int, unit: str = "events", every: float = 2.0):
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self._start = self._last = time.perf_counter()

    def tick(self, done: int) -> None:
        now = time.perf_counter()
        if now - self._last >= self.every:
            self._last = now
            rate = done / (now - self._start)
            progress(f"  {self.label}: {done:,}/{self.total:,} {self.unit} ({rate:,.0f}/s)")


# --- the server and its databases ------------------------------------------------------------


@dataclass
class _Server:
    url: str  # SQLAlchemy URL of the server's maintenance database
    embedded: EmbeddedPostgres | None = None
    temp_dir: Path | None = None
    databases: list[str] = field(default_factory=list)


_server: _Server | None = None


def server_url() -> str:
    """The server benchmarks run on, started on first call (embedded unless DATABASE_URL)."""
    global _server
    if _server is None:
        if url := os.environ.get("DATABASE_URL"):
            progress(f"using the PostgreSQL server of DATABASE_URL ({_safe(url)})")
            _server = _Server(url)
        else:
            temp_dir = Path(tempfile.mkdtemp(prefix="sequences-bench-"))
            progress(f"starting an embedded PostgreSQL in {temp_dir}")
            embedded = EmbeddedPostgres(temp_dir)
            _server = _Server(embedded.start(), embedded, temp_dir)
            progress("embedded PostgreSQL is up")
    return _server.url


def fresh_database(prefix: str) -> str:
    """A new, empty database on the server; returns its SQLAlchemy URL (psycopg driver)."""
    server_url()
    assert _server is not None
    name = f"bench_{prefix}_{uuid.uuid4().hex[:8]}"
    url = create_database(_server.url, name)
    _server.databases.append(name)
    return url


def run_experiment(main, doc: str) -> None:
    """An experiment's command line: `--quick` for smaller runs, then `main(quick)`, and the
    benchmark databases dropped whatever happens."""
    import argparse
    import asyncio
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    try:
        asyncio.run(main(parser.parse_args().quick))
    finally:
        close()


def close() -> None:
    """Drop the databases created on a DATABASE_URL server; stop and remove an embedded one."""
    global _server
    server, _server = _server, None
    if server is None:
        return
    if server.embedded is not None:
        server.embedded.stop()
        if server.temp_dir is not None:
            shutil.rmtree(server.temp_dir, ignore_errors=True)
        return
    for name in server.databases:
        try:
            drop_database(server.url, name)
        except Exception as error:  # leave it, but say so
            progress(f"could not drop database {name}: {error}")


def connect_params(url: str) -> dict[str, Any]:
    """libpq keyword parameters (dbname, host, port, user, password) of a SQLAlchemy URL."""
    parsed = make_url(url)
    params: dict[str, Any] = parsed.translate_connect_args(username="user", database="dbname")
    for key, values in parsed.normalized_query.items():
        params[key] = values[0]
    return params


def server_info(url: str) -> dict[str, str]:
    """Version and the settings that decide write throughput, for the JSON record."""
    import psycopg

    names = ("fsync", "synchronous_commit", "wal_sync_method", "shared_buffers", "wal_buffers",
             "max_wal_size", "full_page_writes")
    with psycopg.connect(**connect_params(url), autocommit=True) as conn:
        info = {"server_version": conn.execute("SHOW server_version").fetchone()[0]}
        for name in names:
            info[name] = conn.execute(f"SHOW {name}").fetchone()[0]
    info["server"] = "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded (pgserver)"
    return info


def checkpoint(url: str) -> None:
    """Flush dirty pages now, so a checkpoint does not land in the middle of a timed run."""
    import psycopg

    try:
        with psycopg.connect(**connect_params(url), autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    except psycopg.Error:
        pass  # not a superuser (DATABASE_URL): nothing to do about it


def busy_cpus(seconds: float = 1.0) -> float | None:
    """How many CPUs something else keeps busy right now (from /proc/stat; None elsewhere)."""
    def sample():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except OSError:
        return None
    cpus = os.cpu_count() or 1
    return cpus * (1 - (idle1 - idle0) / max(1, total1 - total0))


def _safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


# --- results ---------------------------------------------------------------------------------


@dataclass
class Result:
    figure: str
    value: float
    unit: str
    baseline_value: float | None = None
    baseline_name: str | None = None
    ratio: float | None = None  # value / baseline_value
    target: str | None = None  # e.g. ">= 5x"; None where no target applies
    passed: bool | None = None  # None: no target (a reference figure)
    benchmark: str = ""  # the registry name, filled in by the runner
    details: dict[str, Any] = field(default_factory=dict)  # JSON only, not in the table

    @classmethod
    def compare(cls, figure: str, value: float, unit: str, baseline_value: float,
                baseline_name: str, min_ratio: float | None = None,
                details: dict[str, Any] | None = None) -> Result:
        """A figure against a baseline; with `min_ratio`, the target is ratio >= min_ratio."""
        ratio = value / baseline_value if baseline_value else None
        target = passed = None
        if min_ratio is not None:
            target = f">= {min_ratio:g}x"
            passed = ratio is not None and ratio >= min_ratio
        return cls(figure, value, unit, baseline_value, baseline_name, ratio, target, passed,
                   details=details or {})


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def format_table(results: list[Result]) -> str:
    headers = ("figure", "value", "baseline", "ratio", "target", "ok")
    rows = []
    for r in results:
        rows.append((
            r.figure,
            f"{_number(r.value)} {r.unit}",
            f"{_number(r.baseline_value)} ({r.baseline_name})" if r.baseline_value is not None
            else "-",
            f"{r.ratio:.2f}x" if r.ratio is not None else "-",
            r.target or "-",
            {True: "yes", False: "NO", None: "-"}[r.passed],
        ))
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    right = {1, 2, 3}  # numbers align right

    def line(cells) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [line(headers), line("-" * w for w in widths)]
    out += [line(row) for row in rows]
    return "\n".join(out)


def write_json(results: list[Result], meta: dict[str, Any]) -> Path:
    """Write bench/results/<UTC timestamp>.json and bench/results/latest.json; return the first."""
    now = datetime.now(UTC)
    document = {
        "timestamp": now.isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        **meta,
        "results": [asdict(r) for r in results],
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    text = json.dumps(document, indent=2, default=str) + "\n"
    path.write_text(text)
    (RESULTS_DIR / "latest.json").write_text(text)
    return path
