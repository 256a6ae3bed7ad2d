"""The enrollment service: owns sequences, contacts and enrollments, and their read models."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from contracts import commands as c
from sequences.bootstrap import Runtime, ServiceParts, run_service
from sequences.db import Migrations
from sequences.messaging.rpc import AtOnce
from services.enrollment import analytics, domain
from services.enrollment.handlers import EnrollmentCommands
from services.enrollment.process import BounceRateGuard, EnrollmentProcess, process_subscription
from services.enrollment.projections import PROJECTION, projector
from services.enrollment.queries import EnrollmentQueries
from services.enrollment.variant_judge import variant_judge

NAME = "enrollment"
MIGRATIONS = Migrations(NAME, Path(__file__).parent / "migrations")
PROJECTIONS = (PROJECTION, analytics.PROJECTION)


def build(runtime: Runtime) -> ServiceParts:
    commands = EnrollmentCommands(runtime)
    process = EnrollmentProcess(
        commands, soft_bounce_limit=int(os.environ.get("SOFT_BOUNCE_LIMIT", "3")),
        guard=BounceRateGuard.from_env())
    queries = EnrollmentQueries(runtime)
    return ServiceParts(
        subscriptions=[projector, analytics.analytics, process_subscription(process),
                       variant_judge(runtime)],
        requests={
            c.CreateSequence: commands.create_sequence,
            c.ChangeSequenceSteps: commands.change_steps,
            c.ChangeSequenceSettings: commands.change_settings,
            c.SetWorkspaceCalendar: commands.set_workspace_calendar,
            c.GetWorkspaceCalendar: commands.get_workspace_calendar,
            c.PauseSequence: commands.sequence_decision(domain.pause),
            c.ResumeSequence: commands.sequence_decision(domain.resume),
            c.ArchiveSequence: commands.sequence_decision(domain.archive),
            c.CreateContact: commands.create_contact,
            c.UpdateContact: commands.update_contact,
            c.DeleteContact: commands.delete_contact,
            c.OptOutContact: commands.opt_out_contact,
            # two chunks at once: the gateway sends the next before the answer to the last
            c.ImportContacts: AtOnce(commands.import_contacts, 2),
            c.EnrollContact: commands.enroll_contact,
            c.EnrollSegment: commands.enroll_segment,
            c.StopEnrollment: commands.stop_enrollment,
            c.RetryEnrollment: commands.retry_enrollment,
            c.ResumeEnrollment: commands.resume_enrollment,
            c.CompleteTask: commands.complete_task,
            c.ListTasks: queries.list_tasks,
            c.GetSequence: queries.get_sequence,
            c.ListSequences: queries.list_sequences,
            c.GetContact: queries.get_contact,
            c.ListContacts: queries.list_contacts,
            c.ListContactEnrollments: queries.list_contact_enrollments,
            c.GetEnrollment: queries.get_enrollment,
            c.ListEnrollments: queries.list_enrollments,
            c.GetEnrolleeTable: queries.get_enrollee_table,
            c.GetStepStats: queries.get_step_stats,
            c.GetSequenceAnalytics: queries.get_sequence_analytics,
            c.PreviewSegment: commands.preview_segment,
            c.GetTimeline: queries.get_timeline,
            c.ListSenderAddresses: queries.list_sender_addresses,
            c.AddSuppressions: commands.add_suppressions,
            c.RemoveSuppression: commands.remove_suppression,
            c.ListSuppressions: queries.list_suppressions,
        },
    )


def main() -> None:
    asyncio.run(run_service(NAME, build, (MIGRATIONS,)))
