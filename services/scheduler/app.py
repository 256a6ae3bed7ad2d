"""The scheduler service: decides when each enrollment's next step is due and emits StepDue."""

from __future__ import annotations

import asyncio
from pathlib import Path

from contracts.commands import PreviewSchedule
from sequences.bootstrap import Runtime, ServiceParts, run_service
from sequences.db import Migrations
from services.scheduler.handlers import SchedulerHandlers, subscription

NAME = "scheduler"
MIGRATIONS = Migrations(NAME, Path(__file__).parent / "migrations")


def build(runtime: Runtime) -> ServiceParts:
    handlers = SchedulerHandlers(runtime)
    return ServiceParts(
        subscriptions=[subscription(handlers)],
        requests={PreviewSchedule: handlers.preview_schedule},
        loops=[handlers.run_firing],
    )


def main() -> None:
    asyncio.run(run_service(NAME, build, (MIGRATIONS,)))
