"""The enrollment service: owns sequences, contacts and enrollments, and their read models."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from contracts import commands as c
from sequences.bootstrap import Runtime, ServiceParts, run_service
from sequences.db import Migrations
from services.enrollment import domain
from services.enrollment.handlers import EnrollmentCommands, process_subscription
from services.enrollment.projections import PROJECTION, projector
from services.enrollment.queries import EnrollmentQueries

NAME = "enrollment"
MIGRATIONS = Migrations(NAME, Path(__file__).parent / "migrations")
PROJECTIONS = (PROJECTION,)


def build(runtime: Runtime) -> ServiceParts:
    commands = EnrollmentCommands(
        runtime, soft_bounce_limit=int(os.environ.get("SOFT_BOUNCE_LIMIT", "3")))
    queries = EnrollmentQueries(runtime)
    return ServiceParts(
        subscriptions=[projector, process_subscription(commands)],
        requests={
            c.CreateSequence: commands.create_sequence,
            c.ChangeSequenceSteps: commands.change_steps,
            c.PauseSequence: commands.sequence_decision(domain.pause),
            c.ResumeSequence: commands.sequence_decision(domain.resume),
            c.ArchiveSequence: commands.sequence_decision(domain.archive),
            c.CreateContact: commands.create_contact,
            c.UpdateContact: commands.update_contact,
            c.DeleteContact: commands.delete_contact,
            c.OptOutContact: commands.opt_out_contact,
            c.ImportContacts: commands.import_contacts,
            c.EnrollContact: commands.enroll_contact,
            c.EnrollSegment: commands.enroll_segment,
            c.StopEnrollment: commands.stop_enrollment,
            c.RetryEnrollment: commands.retry_enrollment,
            c.CompleteTask: commands.complete_task,
            c.ListTasks: queries.list_tasks,
            c.GetSequence: queries.get_sequence,
            c.ListSequences: queries.list_sequences,
            c.GetContact: queries.get_contact,
            c.ListContacts: queries.list_contacts,
            c.ListContactEnrollments: queries.list_contact_enrollments,
            c.GetEnrollment: queries.get_enrollment,
            c.ListEnrollments: queries.list_enrollments,
            c.GetStepStats: queries.get_step_stats,
            c.PreviewSegment: commands.preview_segment,
            c.GetTimeline: queries.get_timeline,
            c.ListSenderAddresses: queries.list_sender_addresses,
        },
    )


def main() -> None:
    asyncio.run(run_service(NAME, build, (MIGRATIONS,)))
