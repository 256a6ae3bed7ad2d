"""The scheduler service: decides when each enrollment's next step is due and emits StepDue."""

from __future__ import annotations

import asyncio
from pathlib import Path

from contracts.commands import PreviewSchedule
from sequences import metrics, operations
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
        samples=[(_DUE, lambda: _due_steps(runtime))],
    )


_DUE = ("sequences.due_steps.pending", "sequences.due_steps.late",
        "sequences.due_steps.oldest_late_age")


async def _due_steps(runtime: Runtime) -> list[metrics.Sample]:
    figures = await operations.due_steps(runtime.engine, runtime.clock.now())
    return [(name, {}, value) for name, value in zip(_DUE, figures)]


def main() -> None:
    asyncio.run(run_service(NAME, build, (MIGRATIONS,)))
