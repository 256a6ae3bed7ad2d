"""What the API answers with: read models projected from the log."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel

from contracts.values import Language, SendPolicy, Step
from sequences.i18n import N_


class EnrollmentStatus(StrEnum):
    active = "active"
    needs_attention = "needs_attention"  # a step is held until someone fixes the cause
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
    language: Language
    state: str  # live | paused | archived
    enrolled: int
    counts: dict[str, int]  # enrollees per status
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
    status: str
    tags: list[str]
    lists: list[str]
    opted_out: bool
    created_at: datetime
    updated_at: datetime


class EnrollmentView(BaseModel):
    enrollment_id: uuid.UUID
    sequence_id: uuid.UUID
    contact_id: uuid.UUID
    contact_name: str
    contact_email: str
    contact_company: str = ""
    status: EnrollmentStatus
    current_step: int  # steps completed so far: the index of the next step (the count when done)
    sends: int
    opens: int  # pixel loads, all of them
    unique_opens: int  # emails opened at least once
    enrolled_at: datetime
    last_activity_at: datetime
    next_due_at: datetime | None  # when the next step goes out (None when nothing is planned)
    held: bool  # the next step waits for the sequence to resume
    schedule_note: str | None  # why the next step moved (e.g. a mailbox's daily cap)
    attention: str | None  # why a step is held (needs_attention)
    ended_reason: str | None  # why it stopped, bounced or replied


class EnrollmentPage(BaseModel):
    items: list[EnrollmentView]
    next_cursor: str | None


class ContactEnrollmentView(EnrollmentView):
    """An enrollment as the contact card shows it: with its sequence's name and state."""

    sequence_name: str
    sequence_state: str  # live | paused | archived


class ContactEnrollmentPage(BaseModel):
    items: list[ContactEnrollmentView]
    next_cursor: str | None


class ContactPage(BaseModel):
    items: list[ContactView]
    next_cursor: str | None


class SequencePage(BaseModel):
    items: list[SequenceView]
    next_cursor: str | None


class BulkEnrollmentResult(BaseModel):
    enrolled: int
    skipped_active: int  # already active in this sequence
    skipped_ended: int  # an earlier enrollment ended and `reenroll` was not asked for
    excluded_opted_out: int
    refused_bounced: int  # their address bounced before and has not changed


# Why a contact was not enrolled: the `detail` of the 409 answer to `EnrollContact`, keyed as
# the counts of `BulkEnrollmentResult` (clients may tell refusals apart by these texts). In the
# catalogs (N_): the web app shows them in the reader's language.
ENROLLMENT_REFUSALS = {
    "skipped_active": N_("the contact is already active in this sequence"),
    "skipped_ended": N_("the contact's earlier enrollment in this sequence ended;"
                        " send reenroll: true to enroll again"),
    "excluded_opted_out": N_("the contact opted out"),
    "refused_bounced": N_("mail to this address bounced; change the contact's email first"),
}


class StepStats(BaseModel):
    step_id: uuid.UUID
    step_index: int  # its position in the sequence now
    channel: str
    sent: int  # enrollees who got this step (an email sent, or the task done or skipped)
    opened: int  # of those emails, how many were opened at least once
    opens: int  # pixel loads, all of them
    replied: int  # replied after this step was their last
    bounced: int  # bounced after this step was their last


class SequenceStepStats(BaseModel):
    """Per step of the sequence as it is now, in order (a removed step's counts are gone)."""

    sequence_id: uuid.UUID
    steps: list[StepStats]


class ImportResult(BaseModel):
    created: int
    updated: int
    unchanged: int


class RowError(BaseModel):
    row: int  # line number in the file (the header is line 1)
    field: str | None
    message: str


class ImportReport(BaseModel):
    created: int
    updated: int
    unchanged: int
    failed: list[RowError]


class TimelineEntry(BaseModel):
    """One event of an enrollment's history, and what caused it."""

    position: int
    event_id: uuid.UUID
    type: str
    stream_id: str
    occurred_at: datetime
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    summary: str
    data: dict


class Timeline(BaseModel):
    enrollment_id: uuid.UUID
    entries: list[TimelineEntry]


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


class StepPreview(BaseModel):
    subject: str | None
    text: str
    html: str
    missing: list[str]  # variables with no value and no fallback: sending would hold the step


class TaskView(BaseModel):
    task_id: uuid.UUID
    enrollment_id: uuid.UUID
    sequence_id: uuid.UUID
    contact_id: uuid.UUID
    contact_name: str
    owner_name: str
    channel: str
    instructions: str
    due_at: datetime
    state: str  # open | done | skipped
    overdue: bool


class TaskPage(BaseModel):
    items: list[TaskView]
    next_cursor: str | None


class MailboxHealthView(BaseModel):
    """A sender mailbox the thread-watcher reads. `mailbox` never carries the password."""

    mailbox: str  # e.g. imaps://younghee%40sales.example@imap.example.com:993
    healthy: bool
    state: str  # connecting | watching | failing
    folders: list[str]
    idle: bool  # new mail is pushed (IMAP IDLE); else it is found by polling
    last_error: str | None = None
    consecutive_failures: int = 0
    last_success_at: datetime | None = None
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None  # when a failing mailbox is tried again


# --- workspaces, users and API keys (the gateway's) -------------------------------------------


class UserView(BaseModel):
    user_id: uuid.UUID
    email: str
    name: str
    created_at: datetime


class WorkspaceView(BaseModel):
    """Who is calling: the workspace of the API key and the user it belongs to."""

    workspace_id: uuid.UUID
    name: str
    user: UserView


class ApiKeyView(BaseModel):
    key_id: uuid.UUID
    name: str
    prefix: str  # the key's first characters, to tell keys apart; the rest is never shown again
    user_id: uuid.UUID
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewApiKey(ApiKeyView):
    # shown once, in the answer that creates it (a repeat of that request answers null); only
    # its SHA-256 is stored
    key: str | None


class ApiKeyPage(BaseModel):
    items: list[ApiKeyView]
    next_cursor: str | None


class UserPage(BaseModel):
    items: list[UserView]
    next_cursor: str | None


# --- webhooks ----------------------------------------------------------------------------------


class WebhookView(BaseModel):
    webhook_id: uuid.UUID
    url: str
    event_types: list[str]
    description: str
    active: bool
    created_at: datetime


class NewWebhook(WebhookView):
    # shown once, in the answer that registers it: deliveries are signed with it,
    # `Sequences-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
    secret: str | None


class WebhookPage(BaseModel):
    items: list[WebhookView]
    next_cursor: str | None


class WebhookDeliveryView(BaseModel):
    delivery_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    ordering_key: str  # deliveries of one key (an enrollment) go out in order
    state: str  # pending | delivered | failed (given up after the last attempt)
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None  # the receiver's HTTP status
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class WebhookDeliveryPage(BaseModel):
    items: list[WebhookDeliveryView]
    next_cursor: str | None
