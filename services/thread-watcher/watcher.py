"""Watching mailboxes: every new message of every watched folder is examined once, and what it
means for an enrollment is appended to the event log.

A mailbox is scanned whenever its watcher is woken: by the poll schedule (APScheduler, every
WATCH_POLL_SECONDS) and, where the server offers IDLE, by the server announcing new mail. Each
message is examined in one transaction that records the decision, appends the events and moves
the folder's position, so a restart neither skips nor repeats one. A mailbox that cannot be read
is retried with exponential backoff and reported unhealthy; the others carry on.

Replicas share the work: a mailbox is read by the one replica holding its PostgreSQL advisory
lock, and each replica holds at most its share of the locks (every mailbox over the replicas
alive, by their heartbeats), so two replicas read six mailboxes three and three. When a replica
dies its locks go with its connection; once its heartbeat is older than the lease period the
others' shares grow and they take its mailboxes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Awaitable, Callable

import psycopg
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.subjects import EVENTS_STREAM
from contracts.views import MailboxHealthView
from sequences import metrics
from sequences.bootstrap import Runtime
from sequences.clock import Clock
from sequences.db import libpq_url
from sequences.eventlog.store import (
    ANY_VERSION,
    Append,
    Causation,
    ConcurrencyConflict,
    EventStore,
)
from sequences.tracing import tracer
from services.thread_watcher import repository
from services.thread_watcher.config import MailboxConfig, WatcherSettings
from services.thread_watcher.domain import Decision, Examined, decide, events_for, examine_raw
from services.thread_watcher.imap import ImapSession
from services.thread_watcher.mailbox import (
    Fetched,
    FolderUnavailable,
    MailboxError,
    MailSession,
)
from services.thread_watcher.maildir import MaildirSession

log = logging.getLogger(__name__)
_tracer = tracer(__name__)
# APScheduler logs every run of the poll job at INFO: a line per mailbox every few seconds
logging.getLogger("apscheduler").setLevel(logging.WARNING)

_IDLE_REFRESH = 300.0  # re-issue IDLE this often: servers and NAT drop idle connections
_MAX_BACKOFF = 300.0
_LEASE_NAMESPACE = 0x5E9_0003  # advisory lock space of mailbox leases
_CONFLICT_RETRIES = 5


def open_session(config: MailboxConfig) -> MailSession:
    return MaildirSession(config) if config.scheme == "maildir" else ImapSession(config)


@dataclass(frozen=True)
class Storage:
    """Where a watcher keeps what it learns: its tables, the event log, the time it reads."""

    engine: AsyncEngine
    database_url: str  # the lease needs a connection of its own
    store: EventStore
    clock: Clock
    # Whether every EmailSent published so far is in watcher.sent_messages. A mailbox is read
    # only then: after downtime, a reply must not be read before the send it answers is known,
    # or it would be filed as unrelated (and its UID passed for good).
    caught_up: Callable[[], Awaitable[bool]] | None = None

    @classmethod
    def of(cls, runtime: Runtime, consumer: str) -> Storage:
        async def caught_up() -> bool:
            info = await runtime.js.consumer_info(EVENTS_STREAM, consumer)
            return info.num_pending == 0 and info.num_ack_pending == 0

        return cls(runtime.engine, runtime.settings.database_url, runtime.store, runtime.clock,
                   caught_up)


class MailboxWatcher:
    """One mailbox: scanned when woken, its health reported, its IDLE connections kept."""

    def __init__(self, config: MailboxConfig, storage: Storage, settings: WatcherSettings,
                 backoff_base: float = 2.0, budget: LeaseBudget | None = None):
        self.config = config
        self._budget = budget or LeaseBudget.unbounded()
        self.name = config.name
        self._storage = storage
        self._settings = settings
        self._backoff_base = backoff_base
        self._wake = asyncio.Event()
        self._session: MailSession | None = None
        self._idle_folders: set[str] = set()
        self._last_success: datetime | None = None

    def wake(self) -> None:
        self._wake.set()

    async def poll(self) -> None:
        """The poll schedule's job (a coroutine, so APScheduler runs it on the event loop)."""
        self.wake()

    async def run(self) -> None:
        """Watch the mailbox until cancelled, whenever this replica holds its lease."""
        while True:
            try:
                async with MailboxLease(self._storage.database_url, self.name,
                                        self._budget) as lease:
                    log.info("%s: watching %s", self.name, ", ".join(self.config.folders))
                    await self._watch(lease)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # PostgreSQL away, lease lost: the other mailboxes go on
                log.warning("%s: watching interrupted (%s); resuming", self.name, error)
                await asyncio.sleep(min(self._settings.poll_seconds, 5))
            finally:
                await self._close_session()

    async def _watch(self, lease: MailboxLease) -> None:
        await self._report_state("connecting", healthy=True, error=None, failures=0)
        self.wake()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(lease.keep())
            tasks.create_task(self._scan_when_woken())
            if self.config.idle and self.config.scheme != "maildir":
                for folder in self.config.folders:
                    tasks.create_task(self._listen(folder))

    # --- scanning --------------------------------------------------------------------------

    async def _scan_when_woken(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not await self._sends_known():
                await asyncio.sleep(0.5)
                self.wake()  # read the mailbox as soon as the sends are known
                continue
            try:
                problems = await self.scan()
            except MailboxError as error:
                failures += 1
                await self._failed(str(error), failures)
                continue
            failures = 0
            await self._report_state("watching", healthy=not problems,
                                     error="; ".join(problems) or None, failures=0)

    async def _sends_known(self) -> bool:
        caught_up = self._storage.caught_up
        try:
            return caught_up is None or await caught_up()
        except Exception as error:  # NATS away: read anyway rather than stop watching
            log.warning("%s: cannot tell whether sent mail is known (%s)", self.name, error)
            return True

    async def scan(self) -> list[str]:
        """Examine every new message of every folder; returns the folders that could not be read
        (a missing folder does not stop the others)."""
        with _tracer.start_as_current_span("imap.scan", attributes={"mailbox": self.name}):
            session = await self._open_session()
            problems = []
            for folder in self.config.folders:
                try:
                    await self._scan_folder(session, folder)
                except FolderUnavailable as error:
                    problems.append(str(error))
            return problems

    async def _scan_folder(self, session: MailSession, folder: str) -> None:
        storage = self._storage
        async with storage.engine.connect() as conn:
            after = await repository.position(conn, self.name, folder)
        since = storage.clock.now() - timedelta(days=self._settings.lookback_days)
        unread = await session.unread(folder, after, since)
        async for fetched in unread.messages:
            await self._examine(folder, fetched)
            await session.acknowledge(fetched)
        if unread.position_after is not None:
            async with storage.engine.begin() as conn:
                await repository.save_position(conn, self.name, folder, unread.position_after,
                                               storage.clock.now())

    async def _examine(self, folder: str, fetched: Fetched) -> None:
        examined = examine_raw(fetched.raw)
        for attempt in range(1, _CONFLICT_RETRIES + 1):
            try:
                decision = await self._record(folder, fetched, examined)
            except ConcurrencyConflict:  # another writer appended to the same stream: again
                if attempt == _CONFLICT_RETRIES:
                    raise
                continue
            if decision is not None:
                log.info("%s %s: %s %s -> %s", self.name, folder, decision.label,
                         examined.mail.message_id or examined.mail.key,
                         decision.sent.enrollment_id if decision.sent else "no enrollment")
            return

    async def _record(self, folder: str, fetched: Fetched, examined: Examined) -> Decision | None:
        """One transaction: the decision, its events, the folder's position. None when the
        message was examined before (a rescan, a copy in another folder, another replica)."""
        storage = self._storage
        with _tracer.start_as_current_span("thread-watcher.examine"):
            async with storage.engine.begin() as conn:
                decision = decide(examined, await repository.find_sent(conn, examined.wanted()))
                now = storage.clock.now()
                new = await repository.record_examined(conn, examined.mail.key, self.name, folder,
                                                       decision, now)
                if new and (events := events_for(decision, now)):
                    appends = [Append(e.stream_id(), ANY_VERSION, [e]) for e in events]
                    await storage.store.append(conn, appends,
                                               Causation.new(decision.sent.workspace_id))
                if fetched.position is not None:
                    await repository.save_position(conn, self.name, folder, fetched.position, now)
        if new:
            metrics.inbound.add(1, {"decision": decision.kind})
        return decision if new else None

    async def _open_session(self) -> MailSession:
        if self._session is None:
            session = open_session(self.config)
            try:
                await session.open()
            except BaseException:  # a refused login leaves a connection open
                await session.close()
                raise
            self._session = session
        return self._session

    async def _close_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _failed(self, error: str, failures: int) -> None:
        await self._close_session()
        delay = self.backoff(failures)
        log.warning("%s: %s (failure %d); retrying in %.1f s", self.name, error, failures, delay)
        await self._report_state("failing", healthy=False, error=error, failures=failures,
                                 retry_in=delay)
        await asyncio.sleep(delay)
        self.wake()

    def backoff(self, failures: int) -> float:
        return min(_MAX_BACKOFF, self._backoff_base * 2 ** (failures - 1))

    # --- IDLE ------------------------------------------------------------------------------

    async def _listen(self, folder: str) -> None:
        """Keep an IDLE connection on `folder` and wake the scanner when the server says new
        mail came. Without IDLE on the server, polling alone finds the mail."""
        failures = 0
        while True:
            session = ImapSession(self.config)
            try:
                await session.open()
                if not session.supports_idle:
                    log.info("%s: the server offers no IDLE; polling every %g s", self.name,
                             self._settings.poll_seconds)
                    return
                await session.select(folder)
                self._idle_folders.add(folder)
                failures = 0
                self.wake()  # whatever arrived before IDLE began
                while True:
                    if await session.wait_for_change(_IDLE_REFRESH):
                        self.wake()
            except MailboxError as error:
                self._idle_folders.discard(folder)
                failures += 1
                log.debug("%s %s: IDLE interrupted (%s)", self.name, folder, error)
                await asyncio.sleep(self.backoff(failures))
            finally:
                await session.close()

    # --- health ----------------------------------------------------------------------------

    async def _report_state(self, state: str, *, healthy: bool, error: str | None,
                            failures: int, retry_in: float | None = None) -> None:
        now = self._storage.clock.now()
        if state == "watching":
            self._last_success = now
        view = MailboxHealthView(
            mailbox=self.name, healthy=healthy, state=state, folders=list(self.config.folders),
            idle=bool(self._idle_folders), last_error=error, consecutive_failures=failures,
            last_success_at=self._last_success, last_attempt_at=now,
            next_attempt_at=now + timedelta(seconds=retry_in) if retry_in else None,
        )
        async with self._storage.engine.begin() as conn:
            await repository.save_health(conn, view)


class MailboxLease:
    """Only one replica reads a mailbox: the one holding an advisory lock named after it, on a
    connection of its own. When that replica dies its connection goes, and the lock with it."""

    def __init__(self, database_url: str, mailbox: str, budget: LeaseBudget | None = None,
                 check_every: float = 2.0):
        self._conninfo = libpq_url(database_url)
        self._mailbox = mailbox
        self._budget = budget or LeaseBudget.unbounded()
        self._check_every = check_every
        self._conn: psycopg.AsyncConnection | None = None
        self._held = False

    async def __aenter__(self) -> MailboxLease:
        self._conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        try:
            # another replica reads it, or this one holds its share already: stand by
            while not (self._budget.has_room() and await self._try_lock()):
                await asyncio.sleep(self._check_every)
        except BaseException:
            await self.__aexit__()
            raise
        self._held = True
        self._budget.held += 1
        return self

    async def _try_lock(self) -> bool:
        assert self._conn is not None
        cursor = await self._conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                                          [_LEASE_NAMESPACE, self._mailbox])
        row = await cursor.fetchone()
        return bool(row and row[0])

    async def keep(self) -> None:
        """Return never; raise when the lock's connection is gone."""
        assert self._conn is not None
        while True:
            await asyncio.sleep(self._check_every)
            await self._conn.execute("SELECT 1")
            if self._budget.over():  # a replica joined: let this one go to it
                self._release()
                raise LeaseGivenUp(f"{self._mailbox}: over this replica's share of mailboxes")

    def _release(self) -> None:
        if self._held:
            self._held = False
            self._budget.held -= 1

    async def __aexit__(self, *exc) -> None:
        self._release()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()


class LeaseGivenUp(Exception):
    """This replica holds more than its share: the lease goes back (another replica takes it)."""


class LeaseBudget:
    """How many mailbox leases this replica may hold: its share of all mailbox leases among the
    replicas whose heartbeat (`watcher.replicas`, in PostgreSQL's time) is younger than the
    lease period. The one-replica default (tests, a single watcher) is unbounded."""

    def __init__(self, limit: float = math.inf):
        self.limit = limit
        self.held = 0

    @classmethod
    def unbounded(cls) -> LeaseBudget:
        return cls()

    def has_room(self) -> bool:
        return self.held < self.limit

    def over(self) -> bool:
        return self.held > self.limit

    async def keep_share(self, database_url: str, mailboxes: Callable[[], int],
                         lease_seconds: float, every: float = 2.0) -> None:
        """Beat the heart and recompute the share, until cancelled."""
        replica = uuid.uuid4()
        conninfo = libpq_url(database_url)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo,
                                                                 autocommit=True) as conn:
                    while True:
                        await conn.execute(_HEARTBEAT, {"id": replica})
                        row = await (await conn.execute(_ALIVE, {"period": lease_seconds})
                                     ).fetchone()
                        self.limit = math.ceil(mailboxes() / max(1, row[0]))
                        await asyncio.sleep(every)
            except psycopg.Error as error:  # PostgreSQL away: keep the share we had
                log.warning("watcher heartbeat: %s", error)
                await asyncio.sleep(every)


_HEARTBEAT = ("INSERT INTO watcher.replicas (replica_id, seen_at) VALUES (%(id)s, now())"
              " ON CONFLICT (replica_id) DO UPDATE SET seen_at = now()")
_ALIVE = ("SELECT count(*) FROM watcher.replicas"
          " WHERE seen_at > now() - make_interval(secs => %(period)s)")


class Watching:
    """Every mailbox, each on its own, woken by one poll schedule: those given (WATCH_MAILBOXES)
    and, with `connected`, the workspaces' connected mailboxes, looked up again every
    `refresh_seconds`: one connected, changed or removed is picked up then, without a restart.
    With `budget`, this replica holds only its share of the leases (see LeaseBudget)."""

    def __init__(self, watchers: list[MailboxWatcher], poll_seconds: float,
                 connected: Callable[[], Awaitable[list[MailboxConfig]]] | None = None,
                 make: Callable[[MailboxConfig], MailboxWatcher] | None = None,
                 refresh_seconds: float = 30.0, budget: LeaseBudget | None = None,
                 database_url: str | None = None, lease_seconds: float = 10.0):
        self.watchers = watchers
        self._poll_seconds = poll_seconds
        self._connected = connected
        self._make = make
        self._refresh_seconds = refresh_seconds
        self._budget = budget
        self._database_url = database_url
        self._lease_seconds = lease_seconds
        self._running: dict[str, tuple[MailboxConfig, asyncio.Task]] = {}

    async def run(self) -> None:
        self._scheduler = AsyncIOScheduler()
        self._scheduler.start()
        fixed = {w.name for w in self.watchers}
        heartbeat = None
        try:
            for watcher in self.watchers:
                self._start(watcher.config, watcher)
            if self._budget is not None and self._database_url:
                heartbeat = asyncio.ensure_future(self._budget.keep_share(
                    self._database_url, lambda: len(self._running), self._lease_seconds))
            if self._connected is None:
                await asyncio.gather(*(task for _, task in self._running.values()))
                return
            while True:
                await self._refresh(fixed)
                await asyncio.sleep(self._refresh_seconds)
        finally:
            tasks = [task for _, task in self._running.values()] + ([heartbeat] if heartbeat
                                                                    else [])
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # leases given back now
            self._scheduler.shutdown(wait=False)

    async def _refresh(self, fixed: set[str]) -> None:
        try:
            wanted = {config.name: config for config in await self._connected()}
        except Exception as error:  # PostgreSQL away: keep watching what we watch
            log.warning("cannot look up the connected mailboxes: %s", error)
            return
        for name, (config, task) in list(self._running.items()):
            if name not in fixed and wanted.get(name) != config:  # removed or changed
                task.cancel()
                self._scheduler.remove_job(name)
                del self._running[name]
                log.info("%s: no longer watched here (removed or changed)", name)
        for name, config in wanted.items():
            if name not in self._running:
                self._start(config, self._make(config))

    def _start(self, config: MailboxConfig, watcher: MailboxWatcher) -> None:
        self._scheduler.add_job(watcher.poll, "interval", seconds=self._poll_seconds,
                                id=watcher.name, max_instances=1, coalesce=True)
        self._running[watcher.name] = (config, asyncio.ensure_future(watcher.run()))
