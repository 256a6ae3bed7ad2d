"""Commands (imperative: do this) and queries (tell me), sent by the gateway to a service.

The gateway validates every HTTP body with these models, so a bad field is refused at the door
with its name; the service validates again, because other clients may send commands directly.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from contracts.subjects import command_subject, query_subject
from contracts.values import SendPolicy, SingleLine, Steps, TimezoneName

Name = Annotated[SingleLine, Field(min_length=1, max_length=200)]
OptionalText = Annotated[SingleLine, Field(max_length=200)]


class Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    service: ClassVar[str]

    @classmethod
    def nats_subject(cls) -> str:
        return command_subject(cls.service, cls.__name__)


class Query(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    service: ClassVar[str]

    @classmethod
    def nats_subject(cls) -> str:
        return query_subject(cls.service, cls.__name__)


# --- enrollment service: commands -------------------------------------------------------------


class CreateSequence(Command):
    service: ClassVar[str] = "enrollment"

    name: Name
    purpose: Annotated[str, Field(max_length=2000)] | None = None
    sender_name: Name
    sender_email: EmailStr
    timezone: TimezoneName
    send_policy: SendPolicy
    steps: Steps


class ChangeSequenceSteps(Command):
    """Replace the steps of a sequence. Keep a step by sending its step_id; steps enrollees
    already ran are never rewritten, pending ones are re-planned."""

    service: ClassVar[str] = "enrollment"
    sequence_id: uuid.UUID
    steps: Steps


class PauseSequence(Command):
    service: ClassVar[str] = "enrollment"
    sequence_id: uuid.UUID


class ResumeSequence(Command):
    service: ClassVar[str] = "enrollment"
    sequence_id: uuid.UUID


class ArchiveSequence(Command):
    service: ClassVar[str] = "enrollment"
    sequence_id: uuid.UUID


class CreateContact(Command):
    service: ClassVar[str] = "enrollment"

    name: OptionalText = ""
    company: OptionalText = ""
    job_title: OptionalText = ""
    owner_name: OptionalText = ""
    email: EmailStr
    phone: Annotated[SingleLine, Field(max_length=40)] = ""


class EnrollContact(Command):
    service: ClassVar[str] = "enrollment"

    sequence_id: uuid.UUID
    contact_id: uuid.UUID


# --- scheduler: queries ------------------------------------------------------------------------


class PreviewSchedule(Query):
    """When each step would go out for someone enrolled at `start` (default: now), if every
    step completes when it goes out. A `start` without offset is read in the sequence's zone."""

    service: ClassVar[str] = "scheduler"
    sequence_id: uuid.UUID
    start: datetime | None = None


# --- enrollment service: queries --------------------------------------------------------------


class GetSequence(Query):
    service: ClassVar[str] = "enrollment"
    sequence_id: uuid.UUID


class GetContact(Query):
    service: ClassVar[str] = "enrollment"
    contact_id: uuid.UUID


class GetEnrollment(Query):
    service: ClassVar[str] = "enrollment"
    enrollment_id: uuid.UUID


class ListEnrollments(Query):
    service: ClassVar[str] = "enrollment"
    sequence_id: uuid.UUID


class StepsRequest(BaseModel):
    """HTTP body of `PUT /v1/sequences/{sequence_id}/steps`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    steps: Steps


class EnrollmentRequest(BaseModel):
    """HTTP body of `POST /v1/sequences/{sequence_id}/enrollments`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    contact_id: uuid.UUID


class ClockAdvance(BaseModel):
    """HTTP body of the dev stack's `POST /v1/dev/clock/advance`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    by: str = Field(pattern=r"^\d+(\.\d+)?[smhd]$", examples=["2d", "6h"])
