"""The thread-watcher service: knows which messages we sent, to recognise replies and bounces."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sequences.bootstrap import Runtime, ServiceParts, run_service
from sequences.db import Migrations
from services.thread_watcher.handlers import watcher

NAME = "thread-watcher"
MIGRATIONS = Migrations("thread_watcher", Path(__file__).parent / "migrations")


def build(runtime: Runtime) -> ServiceParts:
    return ServiceParts(subscriptions=[watcher])


def main() -> None:
    asyncio.run(run_service(NAME, build, (MIGRATIONS,)))
