"""The thread-watcher service: reads the sender mailboxes and tells the rest of the system who
replied, whose mail bounced, and which answers were only automatic (see README.md here)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from contracts.commands import GetMailboxHealth, TestMailboxImap
from sequences.bootstrap import Runtime, ServiceParts, run_service
from sequences.db import Migrations
from sequences.encryption import SecretBox
from sequences.out_of_office import warm_up
from services.thread_watcher.config import WatcherSettings
from services.thread_watcher.connected import ImapTests, watched
from sequences.oauth import AccessTokens
from services.thread_watcher.handlers import HealthQueries, enrollment_ends, watcher
from services.thread_watcher.watcher import LeaseBudget, MailboxWatcher, Storage, Watching

NAME = "thread-watcher"
MIGRATIONS = Migrations("thread_watcher", Path(__file__).parent / "migrations")


def build(runtime: Runtime) -> ServiceParts:
    settings = WatcherSettings.from_env()
    storage = Storage.of(runtime, watcher.name)
    box = SecretBox.from_env()
    tokens = AccessTokens(runtime.engine, box)  # OAuth2 mailboxes' access tokens
    budget = LeaseBudget()
    # off the event loop: the first out-of-office answer finds the return-date reader loaded
    threading.Thread(target=warm_up, name="out-of-office-warm-up", daemon=True).start()

    def make(config):
        return MailboxWatcher(config, storage, settings, budget=budget)

    async def connected():
        return await watched(runtime.engine, box, tokens)

    watching = Watching([make(m) for m in settings.mailboxes], settings.poll_seconds,
                        connected=connected, make=make,
                        refresh_seconds=settings.refresh_seconds, budget=budget,
                        database_url=runtime.settings.database_url,
                        lease_seconds=settings.lease_seconds)
    return ServiceParts(
        subscriptions=[watcher, enrollment_ends],
        requests={GetMailboxHealth: HealthQueries(runtime.engine, settings,
                                                  connected).mailbox_health,
                  TestMailboxImap: ImapTests(runtime.engine, box, tokens).test},
        loops=[watching.run],
    )


def main() -> None:
    asyncio.run(run_service(NAME, build, (MIGRATIONS,)))
