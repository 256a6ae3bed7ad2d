"""What the service benchmarks (scheduler, mailer, enrollment) share: their own NATS server, a
real service run as a child process with its memory sampled, percentiles.

Every server is started here on a free port (never the machine's NATS on 4222 or PostgreSQL on
5432); PostgreSQL databases come from `bench.common.fresh_database` (the run's embedded server).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import psutil
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from sqlalchemy import text

from bench import common
from bench.common import Result
from contracts.subjects import EVENTS_STREAM
from sequences.db import Migrations, create_engine, migrate
from sequences.devstack.nats_server import NatsServer
from sequences.devstack.ports import free_port
from sequences.messaging.nats import ensure_events_stream

MB = 1024 * 1024
SECRET = "bench-secret-0123456789abcdef0123"  # any 32 characters; signs links nobody follows


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q% of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def spread(values: list[float]) -> dict[str, float]:
    """p50 / p99 / max of a list of seconds, rounded for the JSON."""
    if not values:
        return {}
    return {"p50_s": round(percentile(values, 50), 3), "p99_s": round(percentile(values, 99), 3),
            "max_s": round(max(values), 3), "min_s": round(min(values), 3)}


@contextlib.contextmanager
def nats_server(label: str) -> Iterator[NatsServer]:
    """A nats-server with JetStream (file store in a temporary directory) on a free port."""
    with tempfile.TemporaryDirectory(prefix=f"sequences-bench-{label}-nats-") as temp:
        server = NatsServer(Path(temp), free_port())
        server.start()
        common.progress(f"{label}: nats-server on {server.url}")
        try:
            yield server
        finally:
            server.stop()


async def fresh_events_stream(js: JetStreamContext) -> None:
    """The events stream, empty: a service run starts from nothing (its durable consumers go
    with the old stream and are created again by the service)."""
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(EVENTS_STREAM)
    await ensure_events_stream(js)


async def migrated_database(prefix: str, *migrations: Migrations) -> str:
    """A fresh database with the event log's and the given schemas; returns its URL."""
    from sequences.bootstrap import EVENTLOG_MIGRATIONS

    url = common.fresh_database(prefix)
    engine = create_engine(url, pool_size=1)
    try:
        await migrate(engine, EVENTLOG_MIGRATIONS, *migrations)
    finally:
        await engine.dispose()
    return url


class ServiceProcess:
    """One real service, `python -m sequences.cli run NAME`, as a child process: its output in
    a log file, its resident memory and CPU time sampled while it runs."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path,
                 module_args: list[str] | None = None):
        self.name = name
        self.env = env
        # what `python -m` runs; experiments run the same service with patched settings
        self.module_args = module_args or ["sequences.cli", "run", name]
        self.log_path = Path(log_dir) / f"{name}-{time.time_ns()}.log"
        self.process: subprocess.Popen | None = None
        self.peak_rss = 0
        self.idle_rss = 0  # once started, before the measured work
        self._sampler: asyncio.Task | None = None
        self._psutil: psutil.Process | None = None
        self._cpu_start = 0.0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        env = {**os.environ, "SEQUENCES_CLOCK": "system", "SEQUENCES_SECRET": SECRET,
               "LOG_LEVEL": "INFO", **self.env}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", *self.module_args],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches the benchmark, which stops us
            )
        self._psutil = psutil.Process(self.process.pid)

    async def wait_started(self, timeout: float = 60.0) -> float:
        """Until the service logged that it started (runtime, consumers and relay are up);
        returns the seconds it took."""
        began = time.perf_counter()
        marker = f"{self.name} started".encode()
        while time.perf_counter() - began < timeout:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited before starting:\n{self.tail()}")
            if marker in self.log_path.read_bytes():
                self.idle_rss = self.rss()
                return time.perf_counter() - began
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.name} did not start in {timeout:g} s:\n{self.tail()}")

    def rss(self) -> int:
        try:
            return self._psutil.memory_info().rss if self._psutil else 0
        except psutil.Error:
            return 0

    def cpu_seconds(self) -> float:
        try:
            times = self._psutil.cpu_times() if self._psutil else None
        except psutil.Error:
            return 0.0
        return times.user + times.system if times else 0.0

    def start_sampling(self, every: float = 0.1) -> None:
        """Sample RSS (peak kept) from now on; CPU time counts from now too."""
        self._cpu_start = self.cpu_seconds()

        async def sample():
            while True:
                self.peak_rss = max(self.peak_rss, self.rss())
                await asyncio.sleep(every)

        self._sampler = asyncio.create_task(sample())

    def stop_sampling(self) -> float:
        """Stop sampling; returns the CPU seconds the service used since sampling started."""
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None
        self.peak_rss = max(self.peak_rss, self.rss())
        return self.cpu_seconds() - self._cpu_start

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        process, self.process = self.process, None
        if self._sampler is not None:
            self._sampler.cancel()
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def tail(self, size: int = 3000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return "(no log)"
        return data[-size:].decode(errors="replace")

    def errors(self) -> list[str]:
        """Lines of its log at WARNING or above (shown when a run went wrong)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [line for line in lines if " WARNING " in line or " ERROR " in line
                or "Traceback" in line]


class CpuMeter:
    """CPU seconds used by named processes between `start()` and `stop()`. For a process tree
    (PostgreSQL's postmaster and its backends) the children count too, live and exited."""

    def __init__(self, processes: dict[str, int], trees: tuple[str, ...] = ()):
        self._processes = {name: psutil.Process(pid) for name, pid in processes.items()}
        self._trees = set(trees)
        self._started: dict[str, float] = {}
        self._wall = 0.0

    def _used(self, name: str, process: psutil.Process) -> float:
        try:
            t = process.cpu_times()
            used = t.user + t.system
            if name in self._trees:
                used += t.children_user + t.children_system
                for child in process.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        c = child.cpu_times()
                        used += c.user + c.system
            return used
        except psutil.Error:
            return 0.0

    def start(self) -> None:
        self._wall = time.perf_counter()
        self._machine = _machine_busy()
        self._started = {n: self._used(n, p) for n, p in self._processes.items()}
        self._lapped = dict(self._started)

    def lap(self) -> dict[str, float]:
        """CPU seconds per process since the last lap (or `start`): a phase's share."""
        now = {n: self._used(n, p) for n, p in self._processes.items()}
        used = {n: round(v - self._lapped.get(n, 0.0), 2) for n, v in now.items()}
        self._lapped = now
        return used

    def stop(self) -> dict[str, float]:
        """CPU seconds per process, and `cores`: how many CPUs each kept busy on average;
        `machine_busy_cores`: all processes together (from /proc/stat), and `others_cores`
        what processes not measured here (other work on the machine, this benchmark's own
        process) took meanwhile."""
        wall = time.perf_counter() - self._wall
        used = {n: self._used(n, p) - self._started.get(n, 0.0)
                for n, p in self._processes.items()}
        out = {**{f"{n}_cpu_s": round(v, 2) for n, v in used.items()},
               **{f"{n}_cores": round(v / wall, 2) for n, v in used.items() if wall > 0},
               "wall_s": round(wall, 2)}
        if self._machine is not None and (now := _machine_busy()) is not None and wall > 0:
            busy = (now - self._machine) / wall
            out["machine_busy_cores"] = round(busy, 2)
            out["others_cores"] = round(busy - sum(used.values()) / wall, 2)
        return out


def _machine_busy() -> float | None:
    """CPU seconds every process of the machine used so far (/proc/stat; None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (sum(values) - values[3] - values[4]) / ticks  # all but idle and iowait


def postmaster_pid(url: str) -> int | None:
    """The PostgreSQL server's main process, when it runs on this machine."""
    import psycopg

    with psycopg.connect(**common.connect_params(url)) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        try:  # while the backend is alive: it exits with the connection
            return psutil.Process(backend).ppid()
        except psutil.Error:
            return None


# --- the whole system (the dev stack): memory of every process, events level everywhere -------


class RssSampler:
    """Resident memory of processes by label (`mailer`, `mailer-1`, ...), sampled every `every`
    seconds until stopped. The pids are asked for at each sample, so a restarted process keeps
    its label. `peaks` is the highest resident memory each label's processes ever had (the
    kernel's VmHWM, so a peak between two samples counts too; for a process killed meanwhile,
    up to its last sample)."""

    def __init__(self, pids: Callable[[], dict[str, int]], every: float = 0.5):
        self._pids = pids
        self._every = every
        self.samples: dict[str, list[tuple[float, int]]] = {}  # label: [(seconds, bytes)]
        self.peaks: dict[str, int] = {}  # label: bytes
        self._task: asyncio.Task | None = None
        self._began = time.perf_counter()

    def sample(self) -> None:
        now = time.perf_counter() - self._began
        for label, pid in self._pids().items():
            with contextlib.suppress(psutil.Error, OSError):
                rss = psutil.Process(pid).memory_info().rss
                self.samples.setdefault(label, []).append((now, rss))
                self.peaks[label] = max(self.peaks.get(label, 0), rss, _high_water_mark(pid))

    def start(self) -> None:
        async def run():
            while True:
                self.sample()
                await asyncio.sleep(self._every)

        self._task = asyncio.create_task(run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()

    def seconds(self) -> float:
        return time.perf_counter() - self._began

    def between(self, label: str, start: float, end: float) -> list[int]:
        return [rss for t, rss in self.samples.get(label, []) if start <= t <= end]


def _high_water_mark(pid: int) -> int:
    """The most resident memory the process has had since it started (Linux; 0 elsewhere)."""
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return 0


def stack_pids(stack) -> dict[str, int]:
    """Every service process of a dev stack by label, and its nats-server (each node's)."""
    nodes = getattr(stack.nats, "nodes", [stack.nats])
    nats = {"nats-server" if len(nodes) == 1 else f"nats-server-{i}": node.pid
            for i, node in enumerate(nodes, start=1) if node.pid is not None}
    return {**stack.service_pids(), **nats}


RSS_LIMIT_MB = 150  # every service's peak through a run (issue 18)


def peak_rss_results(sampler: RssSampler, what: str,
                     unbounded: str = "nats-server") -> list[Result]:
    """Every sampled process's peak RSS, highest first, each service's against the limit; the
    processes named `unbounded...` (not ours) are shown for information."""
    results = []
    for label, peak in sorted(sampler.peaks.items(), key=lambda item: -item[1]):
        bounded = not label.startswith(unbounded)
        results.append(Result(f"peak RSS: {label}, {what}", peak / MB, "MB",
                              target=f"< {RSS_LIMIT_MB} MB" if bounded else None,
                              passed=peak / MB < RSS_LIMIT_MB if bounded else None))
    return results


@dataclass
class EventLevels:
    """Events in the log, on JetStream, in the outbox, and per durable consumer: (events in the
    log its filter gives it, those of them it has handled: at or before its stream positions)."""

    in_log: int
    on_jetstream: int
    outbox: int
    consumers: dict[str, tuple[int, int]]

    @property
    def settled(self) -> bool:
        # (on a cluster just after a node died, a node's answer can lag too: asked again)
        return self.outbox == 0 and self.on_jetstream == self.in_log and not self.lagging

    @property
    def lagging(self) -> dict[str, tuple[int, int]]:
        """The consumers that have not handled every event they read (in the log, handled)."""
        return {name: (log, seen) for name, (log, seen) in self.consumers.items() if log != seen}

    def __str__(self) -> str:
        return (f"in log {self.in_log}, on JetStream {self.on_jetstream}, outbox {self.outbox},"
                f" lagging consumers (in log, handled): {self.lagging or 'none'}")


async def event_levels(nats_url: str, engine) -> EventLevels:
    from sequences.messaging.nats import connect

    nc = await connect(nats_url, "bench")
    try:
        js = nc.jetstream()
        on_jetstream = (await js.stream_info(EVENTS_STREAM)).state.messages
        # each filter subject seq.events.<category>.<type or >>, as "<category>.<type or >>"
        consumers = {c.name: [subject.split(".", 2)[2] for subject in c.config.filter_subjects or []]
                     for c in await js.consumers_info(EVENTS_STREAM)}
    finally:
        await nc.close()
    async with engine.connect() as conn:
        async def count(sql: str, **params) -> int:
            return (await conn.execute(text(sql), params)).scalar_one()

        levels = EventLevels(await count("SELECT count(*) FROM eventlog.events"), on_jetstream,
                             await count("SELECT count(*) FROM eventlog.outbox"), {})
        for name, subjects in consumers.items():
            row = (await conn.execute(_CONSUMER_LEVEL, {"consumer": name, "subjects": subjects})
                   ).one()
            levels.consumers[name] = (row.read, row.handled)
    return levels


# the events of the log a consumer's filter gives it, and those of them at or before its
# position in their stream (only the streams it reads from JetStream count: a projector's
# positions in the categories it applies at append move too)
_CONSUMER_LEVEL = text(
    "SELECT count(*) AS read, count(*) FILTER (WHERE e.version <= p.version) AS handled"
    " FROM eventlog.events e LEFT JOIN eventlog.consumer_positions p"
    "   ON p.consumer = :consumer AND p.stream_id = e.stream_id"
    " WHERE split_part(e.stream_id, '-', 1) || '.' || e.type = ANY(CAST(:subjects AS text[]))"
    "   OR split_part(e.stream_id, '-', 1) || '.>' = ANY(CAST(:subjects AS text[]))")


async def until_settled(nats_url: str, engine, timeout: float = 60.0,
                        every: float = 1.0) -> EventLevels:
    """Until the outbox is empty and every consumer has handled every event it reads (or the
    timeout: the levels then show who lags), looking every `every` seconds."""
    deadline = time.monotonic() + timeout
    while not (levels := await event_levels(nats_url, engine)).settled \
            and time.monotonic() < deadline:
        await asyncio.sleep(every)
    return levels


# --- profiling (python -m bench.experiments.profile_services) ---------------------------------------------


def py_spy(pid: int, seconds: float, out: Path, rate: int = 200) -> subprocess.Popen:
    """Sample a process with py-spy (collapsed stacks, "raw" format) for `seconds`."""
    binary = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen(
        [str(binary), "record", "-p", str(pid), "-d", str(int(seconds)), "-r", str(rate),
         "-f", "raw", "-o", str(out), "--nonblocking"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


PROFILES = Path(__file__).resolve().parent / "results" / "profiles"


def start_profiles(stack, label: str, seconds: float = 600) -> dict[str, tuple[object, Path]]:
    """`BENCH_PROFILE=webhooks,scheduler` (service names): sample those processes of `stack`
    with py-spy until `report_profiles` (or `seconds`)."""
    names = [n for n in os.environ.get("BENCH_PROFILE", "").split(",") if n]
    PROFILES.mkdir(parents=True, exist_ok=True)
    pids = stack.service_pids()
    return {name: (py_spy(pids[name], seconds, out := PROFILES / f"{label}_{name}.txt"), out)
            for name in names}


def report_profiles(profiles: dict[str, tuple[object, Path]], label: str) -> None:
    for name, (process, out) in profiles.items():
        process.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
        process.wait()
        common.progress(f"{label}: {name}\n{summarize_stacks(out, top=40)}")


def summarize_stacks(path: Path, top: int = 30, focus: str | None = None) -> str:
    """Inclusive and self shares of the functions in a py-spy raw (collapsed) profile.
    `focus`: only stacks through a frame containing this text."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        if focus and focus not in stack:
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    if not total:
        return "(no samples)"
    lines = [f"{total:,} samples" + (f" through {focus!r}" if focus else ""),
             "  inclusive%  self%  function"]
    for frame, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * n / total:9.1f}  {100 * own.get(frame, 0) / total:5.1f}  {frame}")
    lines.append("  top self:")
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * n / total:9.1f}%  {frame}")
    return "\n".join(lines)


def bucket_stacks(path: Path, buckets: list[tuple[str, tuple[str, ...]]]) -> str:
    """Share of samples per bucket: each stack goes to the first bucket one of whose markers
    occurs in it (in order); the rest is "other". An empty stack is py-spy's idle/unknown."""
    counts: dict[str, int] = {name: 0 for name, _ in buckets}
    counts["other"] = counts["idle (no Python frame)"] = 0
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        if not stack.strip():
            counts["idle (no Python frame)"] += n
            continue
        for name, markers in buckets:
            if any(m in stack for m in markers):
                counts[name] += n
                break
        else:
            counts["other"] += n
    return "\n".join(f"  {100 * n / max(1, total):5.1f}%  {name}"
                     for name, n in sorted(counts.items(), key=lambda kv: -kv[1]) if n)


def _short(frame: str) -> str:
    """'send_message (aiosmtplib/smtp.py:123)' -> 'send_message (aiosmtplib/smtp.py)'."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, _ = where.rpartition(":")
    path = path or where
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"
