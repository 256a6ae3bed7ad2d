"""Commands (imperative: do this) and queries (tell me), sent by the gateway to a service.

The gateway validates every HTTP body with these models, so a bad field is refused at the door
with its name; the service validates again, because other clients may send commands directly.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from contracts.subjects import command_subject, query_subject
from contracts.values import (
    DEFAULT_LANGUAGE,
    Email,
    Label,
    Language,
    Labels,
    Phone,
    SendPolicy,
    ShortText,
    SingleLine,
    Steps,
    TimezoneName,
)
from contracts.views import EnrollmentStatus

Name = Annotated[SingleLine, Field(min_length=1, max_length=200)]


class Command(BaseModel):
    """Do this, in this workspace. The gateway sets `workspace_id` from the caller's API key;
    a service never acts on data of another workspace than the command's."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    service: ClassVar[str]
    workspace_id: uuid.UUID

    @classmethod
    def nats_subject(cls) -> str:
        return command_subject(cls.service, cls.__name__)


class Query(BaseModel):
    """Tell me, about this workspace's data only."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    service: ClassVar[str]
    workspace_id: uuid.UUID

    @classmethod
    def nats_subject(cls) -> str:
        return query_subject(cls.service, cls.__name__)


# --- enrollment service: commands -------------------------------------------------------------


class SequenceDefinition(BaseModel):
    """HTTP body of `POST /v1/sequences`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    purpose: Annotated[str, Field(max_length=2000)] | None = None
    sender_name: Name
    sender_email: Email
    timezone: TimezoneName
    send_policy: SendPolicy
    steps: Steps
    language: Language = DEFAULT_LANGUAGE


class CreateSequence(SequenceDefinition, Command):
    service: ClassVar[str] = "enrollment"


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


class ContactFields(BaseModel):
    """A contact as sales teams know it. `email` is its key within a workspace (imports upsert
    by it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ShortText = ""
    company: ShortText = ""
    job_title: ShortText = ""
    owner_name: ShortText = ""
    email: Email
    phone: Phone = ""
    status: Annotated[SingleLine, Field(max_length=50)] = ""
    tags: Labels = []
    lists: Labels = []


class CreateContact(ContactFields, Command):
    service: ClassVar[str] = "enrollment"


class ContactChanges(BaseModel):
    """HTTP body of `PATCH /v1/contacts/{contact_id}`: the fields to change."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ShortText | None = None
    company: ShortText | None = None
    job_title: ShortText | None = None
    owner_name: ShortText | None = None
    email: Email | None = None
    phone: Phone | None = None
    status: Annotated[SingleLine, Field(max_length=50)] | None = None
    tags: Labels | None = None
    lists: Labels | None = None


class UpdateContact(Command):
    service: ClassVar[str] = "enrollment"
    contact_id: uuid.UUID
    changes: ContactChanges


class DeleteContact(Command):
    service: ClassVar[str] = "enrollment"
    contact_id: uuid.UUID


class OptOutContact(Command):
    service: ClassVar[str] = "enrollment"
    contact_id: uuid.UUID
    source: Literal["manual", "unsubscribe-link", "one-click", "import"] = "manual"
    reason: Annotated[str, Field(max_length=500)] | None = None


class ImportContacts(Command):
    """Upsert contacts by email (one chunk of an import; each chunk is one transaction)."""

    service: ClassVar[str] = "enrollment"
    rows: list[ContactFields] = Field(min_length=1, max_length=5000)


class EnrollContact(Command):
    service: ClassVar[str] = "enrollment"

    sequence_id: uuid.UUID
    contact_id: uuid.UUID
    # enroll again a contact whose earlier enrollment in this sequence ended
    reenroll: bool = False


class Segment(BaseModel):
    """Who to enroll: contacts with this status, tag or list (all given must match), or all."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Annotated[SingleLine, Field(max_length=50)] | None = None
    tag: Label | None = None
    list: Label | None = None
    all: bool = False

    @model_validator(mode="after")
    def _says_who(self) -> Segment:
        named = any(v is not None for v in (self.status, self.tag, self.list))
        if named == self.all:
            raise ValueError("give a status, tag or list, or all: true (and not both)")
        return self


class EnrollSegment(Command):
    service: ClassVar[str] = "enrollment"
    sequence_id: uuid.UUID
    segment: Segment
    reenroll: bool = False


class StopEnrollment(Command):
    service: ClassVar[str] = "enrollment"
    enrollment_id: uuid.UUID
    reason: Annotated[str, Field(max_length=500)] | None = None


# --- scheduler: queries ------------------------------------------------------------------------


EARLIEST_START = datetime(2000, 1, 1)
LATEST_START = datetime(2200, 1, 1)


def _sane_start(value: datetime) -> datetime:
    """Refuse a start far outside any real enrollment (a number is read as a Unix time, so
    `-6955913339` would be 1749). Compared as written, offset aside: the bound is loose anyway,
    and converting a year-9999 value to UTC could overflow."""
    if not EARLIEST_START <= value.replace(tzinfo=None) < LATEST_START:
        raise ValueError(f"must be from {EARLIEST_START:%Y-%m-%d} up to {LATEST_START:%Y-%m-%d}")
    return value


ScheduleStart = Annotated[datetime, AfterValidator(_sane_start)]


class PreviewSchedule(Query):
    """When each step would go out for someone enrolled at `start` (default: now), if every
    step completes when it goes out. A `start` without offset is read in the sequence's zone;
    it must be from 2000-01-01 up to 2200-01-01."""

    service: ClassVar[str] = "scheduler"
    sequence_id: uuid.UUID
    start: ScheduleStart | None = None


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


class Page(BaseModel):
    """Cursor pagination: pass back `next_cursor` to get the following page."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    limit: int = Field(default=50, ge=1, le=500)
    cursor: Annotated[str, Field(max_length=500)] | None = None


EnrolleeSort = Literal["enrolled_at", "last_activity_at", "next_due_at", "contact_name", "status"]


class ListEnrollments(Query):
    service: ClassVar[str] = "enrollment"
    sequence_id: uuid.UUID
    status: EnrollmentStatus | None = None
    sort: EnrolleeSort = "enrolled_at"
    descending: bool = False
    page: Page = Page()


class GetStepStats(Query):
    """Per step of a sequence: how many enrollees it reached (sent, or done for a task), opened,
    replied to and bounced on (a reply or bounce counts for the last step the enrollee got)."""

    service: ClassVar[str] = "enrollment"
    sequence_id: uuid.UUID


class PreviewSegment(Query):
    """What `EnrollSegment` with the same fields would do now, without enrolling anyone: how
    many would be enrolled, skipped as already active, excluded as opted out, ..."""

    service: ClassVar[str] = "enrollment"
    sequence_id: uuid.UUID
    segment: Segment
    reenroll: bool = False


class ListContacts(Query):
    service: ClassVar[str] = "enrollment"
    q: Annotated[SingleLine, Field(max_length=200)] | None = None  # in name, company or email
    status: Annotated[SingleLine, Field(max_length=50)] | None = None
    tag: Label | None = None
    list: Label | None = None
    page: Page = Page()


class ListContactEnrollments(Query):
    """Every enrollment of one contact, in every sequence, the latest first (the contact
    card)."""

    service: ClassVar[str] = "enrollment"
    contact_id: uuid.UUID
    page: Page = Page()


class ListSequences(Query):
    service: ClassVar[str] = "enrollment"
    page: Page = Page()


class GetTimeline(Query):
    service: ClassVar[str] = "enrollment"
    enrollment_id: uuid.UUID


class StepsRequest(BaseModel):
    """HTTP body of `PUT /v1/sequences/{sequence_id}/steps`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    steps: Steps


# --- thread-watcher: queries ------------------------------------------------------------------


class GetMailboxHealth(Query):
    """The state of the sender mailboxes the thread-watcher reads, of these addresses."""

    service: ClassVar[str] = "thread-watcher"
    addresses: Annotated[list[Email], Field(max_length=1000)]


class ListSenderAddresses(Query):
    """The addresses the workspace's sequences send from (a list of strings)."""

    service: ClassVar[str] = "enrollment"


class EnrollmentRequest(BaseModel):
    """HTTP body of `POST /v1/sequences/{sequence_id}/enrollments`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    contact_id: uuid.UUID
    reenroll: bool = False


class BulkEnrollmentRequest(BaseModel):
    """HTTP body of `POST /v1/sequences/{sequence_id}/enrollments/bulk`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    segment: Segment
    reenroll: bool = False


class StopRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    reason: Annotated[str, Field(max_length=500)] | None = None


class ClockAdvance(BaseModel):
    """HTTP body of the dev stack's `POST /v1/dev/clock/advance`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    # at most 9999 of a unit: ten thousand days is as far as a test clock needs to go
    by: str = Field(pattern=r"^\d{1,4}(\.\d{1,3})?[smhd]$", examples=["2d", "6h"])


# --- enrollment service: tasks and retries -----------------------------------------------------


class RetryEnrollment(Command):
    """Try the held step again (after fixing the contact or the mailbox)."""

    service: ClassVar[str] = "enrollment"
    enrollment_id: uuid.UUID


class CompleteTask(Command):
    service: ClassVar[str] = "enrollment"
    task_id: uuid.UUID
    outcome: Literal["done", "skipped"]
    note: Annotated[str, Field(max_length=2000)] | None = None


class TaskOutcome(BaseModel):
    """HTTP body of `POST /v1/tasks/{task_id}/complete`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    outcome: Literal["done", "skipped"]
    note: Annotated[str, Field(max_length=2000)] | None = None


class ListTasks(Query):
    service: ClassVar[str] = "enrollment"
    owner_name: Annotated[SingleLine, Field(max_length=200)] | None = None
    sequence_id: uuid.UUID | None = None
    which: Literal["due", "overdue", "open", "all"] = "open"
    page: Page = Page()


# --- mailer ------------------------------------------------------------------------------------


class PreviewStep(Query):
    """Render a step for a chosen contact, or for a sample one, without sending."""

    service: ClassVar[str] = "mailer"
    sequence_id: uuid.UUID
    step_id: uuid.UUID
    contact_id: uuid.UUID | None = None


class SendTestEmail(Command):
    """Send a rendered email step to the requesting user's own address; no enrollment changes."""

    service: ClassVar[str] = "mailer"
    sequence_id: uuid.UUID
    step_id: uuid.UUID
    to: Email
    contact_id: uuid.UUID | None = None


class PreviewRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    contact_id: uuid.UUID | None = None


class TestEmailRequest(BaseModel):
    """HTTP body of "send test to me" (it goes to the API key's user)."""

    __test__ = False
    model_config = ConfigDict(frozen=True, extra="forbid")
    contact_id: uuid.UUID | None = None


class RecordEmailOpen(Command):
    """From the gateway, when an email's tracking pixel is loaded (token already verified)."""

    service: ClassVar[str] = "mailer"
    enrollment_id: uuid.UUID
    step_id: uuid.UUID


# --- workspaces, users and API keys (HTTP bodies; the gateway answers them itself) -----------


class NewApiKeyRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: Name
    # a user of the same workspace; by default the caller
    user_id: uuid.UUID | None = None


class NewUserRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    email: Email
    name: Annotated[SingleLine, Field(max_length=200)] = ""


# --- webhooks ----------------------------------------------------------------------------------


def _https(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError("must be an https:// URL with a host")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials (deliveries are signed instead)")
    return url


def _known_event_types(types: list[str]) -> list[str]:
    import contracts.events  # noqa: F401 (registers every event type)
    from contracts.base import EVENT_TYPES

    if unknown := [t for t in types if t != "*" and t not in EVENT_TYPES]:
        raise ValueError(f"unknown event type {unknown[0]!r}: one of"
                         f" {', '.join(sorted(EVENT_TYPES))} or '*' (every type)")
    return sorted(set(types))


HttpsUrl = Annotated[SingleLine, Field(min_length=9, max_length=2000), AfterValidator(_https)]
EventTypes = Annotated[list[Annotated[str, Field(max_length=100)]],
                       Field(min_length=1, max_length=100), AfterValidator(_known_event_types)]


class WebhookRequest(BaseModel):
    """HTTP body of `POST /v1/webhooks`: where to deliver which events of this workspace."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    url: HttpsUrl
    event_types: EventTypes = Field(examples=[["EnrollmentReplied", "EnrollmentBounced"], ["*"]])
    description: Annotated[SingleLine, Field(max_length=200)] = ""


class RegisterWebhook(WebhookRequest, Command):
    service: ClassVar[str] = "webhooks"


class ListWebhooks(Query):
    service: ClassVar[str] = "webhooks"
    page: Page = Page()


class GetWebhook(Query):
    service: ClassVar[str] = "webhooks"
    webhook_id: uuid.UUID


class DeleteWebhook(Command):
    """No more deliveries to it (those pending are given up); its log stays readable."""

    service: ClassVar[str] = "webhooks"
    webhook_id: uuid.UUID


class ListWebhookDeliveries(Query):
    service: ClassVar[str] = "webhooks"
    webhook_id: uuid.UUID
    state: Literal["pending", "delivered", "failed"] | None = None
    page: Page = Page()


class RedeliverWebhook(Command):
    """Deliver one event again, now (after it failed, or to replay it)."""

    service: ClassVar[str] = "webhooks"
    webhook_id: uuid.UUID
    delivery_id: uuid.UUID
