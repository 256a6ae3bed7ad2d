"""The enrollment service: owns sequences, contacts and enrollments, and their read models."""

from __future__ import annotations

import asyncio
from pathlib import Path

from contracts.commands import (
    ArchiveSequence,
    ChangeSequenceSteps,
    CreateContact,
    CreateSequence,
    EnrollContact,
    GetContact,
    GetEnrollment,
    GetSequence,
    ListEnrollments,
    PauseSequence,
    ResumeSequence,
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
            ChangeSequenceSteps: handlers.change_steps,
            PauseSequence: handlers.pause_sequence,
            ResumeSequence: handlers.resume_sequence,
            ArchiveSequence: handlers.archive_sequence,
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
