"""The thread-watcher service: reads the sender mailboxes and tells the rest of the system who
replied, whose mail bounced, and which answers were only automatic (see README.md here)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from contracts.commands import GetMailboxHealth
from sequences.bootstrap import Runtime, ServiceParts, run_service
from sequences.db import Migrations
from services.thread_watcher.config import WatcherSettings
from services.thread_watcher.handlers import HealthQueries, enrollment_ends, watcher
from services.thread_watcher.watcher import MailboxWatcher, Storage, Watching

NAME = "thread-watcher"
MIGRATIONS = Migrations("thread_watcher", Path(__file__).parent / "migrations")


def build(runtime: Runtime) -> ServiceParts:
    settings = WatcherSettings.from_env()
    storage = Storage.of(runtime, watcher.name)
    watching = Watching([MailboxWatcher(m, storage, settings) for m in settings.mailboxes],
                        settings.poll_seconds)
    return ServiceParts(
        subscriptions=[watcher, enrollment_ends],
        requests={GetMailboxHealth: HealthQueries(runtime.engine, settings).mailbox_health},
        loops=[watching.run],
    )


def main() -> None:
    asyncio.run(run_service(NAME, build, (MIGRATIONS,)))
