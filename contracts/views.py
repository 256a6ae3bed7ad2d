"""What the API answers with: read models projected from the log."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel

from contracts.values import SendPolicy, Step


class EnrollmentStatus(StrEnum):
    active = "active"
    replied = "replied"
    done = "done"
    stopped = "stopped"
    bounced = "bounced"


class SequenceView(BaseModel):
    sequence_id: uuid.UUID
    name: str
    purpose: str | None
    sender_name: str
    sender_email: str
    timezone: str
    send_policy: SendPolicy
    steps: list[Step]
    state: str  # live | paused | archived
    enrolled: int
    headline: str  # "N enrolled · live"
    created_at: datetime


class ContactView(BaseModel):
    contact_id: uuid.UUID
    name: str
    company: str
    job_title: str
    owner_name: str
    email: str
    phone: str
    created_at: datetime


class EnrollmentView(BaseModel):
    enrollment_id: uuid.UUID
    sequence_id: uuid.UUID
    contact_id: uuid.UUID
    status: EnrollmentStatus
    current_step: int  # steps completed so far: the index of the next step (the count when done)
    sends: int
    enrolled_at: datetime
    last_activity_at: datetime


class Created(BaseModel):
    id: uuid.UUID


class ScheduledStep(BaseModel):
    step_id: uuid.UUID
    step_index: int
    channel: str
    local: datetime  # in the sequence's timezone, with its offset
    utc: datetime


class SchedulePreview(BaseModel):
    sequence_id: uuid.UUID
    timezone: str
    start: datetime
    steps: list[ScheduledStep]
