"""Thread-watcher replicas share the mailboxes: two replicas (each its own budget, heartbeat and
lease connections, as two processes would have) read six mailboxes three and three; when one
stops (its connections and heartbeat gone) the other takes all six within a lease period."""

from __future__ import annotations

import asyncio

from sequences.clock import SystemClock
from services.thread_watcher.config import WatcherSettings, parse_mailbox
from services.thread_watcher.watcher import LeaseBudget, MailboxWatcher, Storage, Watching
from tests.support import eventually

LEASE_SECONDS = 3.0


def replica(storage: Storage, database_url: str, mailboxes) -> tuple[Watching, LeaseBudget]:
    settings = WatcherSettings(mailboxes, poll_seconds=30, lease_seconds=LEASE_SECONDS)
    budget = LeaseBudget()
    watchers = [MailboxWatcher(m, storage, settings, budget=budget) for m in mailboxes]
    return Watching(watchers, 30, budget=budget, database_url=database_url,
                    lease_seconds=LEASE_SECONDS), budget


async def test_two_replicas_share_six_mailboxes_and_one_takes_over_when_the_other_dies(
        engine, database_url, store, tmp_path):
    storage = Storage(engine, database_url, store, SystemClock())
    mailboxes = tuple(parse_mailbox(f"maildir://{tmp_path / f'box{n}'}") for n in range(6))
    for m in mailboxes:
        for sub in ("new", "cur", "tmp"):
            (m.path / sub).mkdir(parents=True)
    first, first_budget = replica(storage, database_url, mailboxes)
    second, second_budget = replica(storage, database_url, mailboxes)
    first_task = asyncio.create_task(first.run())
    second_task = asyncio.create_task(second.run())
    try:
        async def shared():
            return first_budget.held == 3 and second_budget.held == 3
        await eventually(shared, timeout=30)

        second_task.cancel()  # its lease connections close, its heartbeat stops
        await asyncio.gather(second_task, return_exceptions=True)

        async def taken_over():
            return first_budget.held == 6
        await eventually(taken_over, timeout=LEASE_SECONDS + 10)
    finally:
        first_task.cancel()
        await asyncio.gather(first_task, return_exceptions=True)
