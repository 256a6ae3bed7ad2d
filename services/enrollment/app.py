"""The enrollment service: owns sequences, contacts and enrollments, and their read models."""

from __future__ import annotations

import asyncio
from pathlib import Path

from contracts.commands import (
    CreateContact,
    CreateSequence,
    EnrollContact,
    GetContact,
    GetEnrollment,
    GetSequence,
    ListEnrollments,
)
from sequences.bootstrap import Runtime, ServiceParts, run_service
from sequences.db import Migrations
from services.enrollment.handlers import EnrollmentHandlers, process_subscription
from services.enrollment.projections import PROJECTION, projector

NAME = "enrollment"
MIGRATIONS = Migrations(NAME, Path(__file__).parent / "migrations")
PROJECTIONS = (PROJECTION,)


def build(runtime: Runtime) -> ServiceParts:
    handlers = EnrollmentHandlers(runtime)
    return ServiceParts(
        subscriptions=[projector, process_subscription(handlers)],
        requests={
            CreateSequence: handlers.create_sequence,
            CreateContact: handlers.create_contact,
            EnrollContact: handlers.enroll_contact,
            GetSequence: handlers.get_sequence,
            GetContact: handlers.get_contact,
            GetEnrollment: handlers.get_enrollment,
            ListEnrollments: handlers.list_enrollments,
        },
    )


def main() -> None:
    asyncio.run(run_service(NAME, build, (MIGRATIONS,)))
