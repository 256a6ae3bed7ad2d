"""Commands (imperative: do this) and queries (tell me), sent by the gateway to a service.

The gateway validates every HTTP body with these models, so a bad field is refused at the door
with its name; the service validates again, because other clients may send commands directly.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from contracts.subjects import command_subject, query_subject
from contracts.webhooks import UNDELIVERED_TYPES, WebhookSecret
from contracts.values import (
    AccountReply,
    DEFAULT_LANGUAGE,
    Email,
    HolidayCalendar,
    HolidayChoice,
    SkipDate,
    SendWindow,
    ZoneMode,
    Label,
    Language,
    Labels,
    MailboxAuth,
    MailboxLimits,
    MailboxPool,
    MailSecurity,
    OAuthProvider,
    Phone,
    SendPolicy,
    ShortText,
    SingleLine,
    Steps,
    SuppressionValue,
    TimezoneChange,
    TimezoneName,
    TrackedRequest,
    Tracking,
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
    # the workspace's connected mailboxes to send from, in rotation (each enrollment keeps the
    # one it got); empty: every email goes from `sender_email`
    mailbox_pool: MailboxPool = []
    holidays: HolidayChoice = Field(
        default="workspace", description="Public holidays skipped: a calendar of its own,"
        " `workspace` (the workspace's default calendar) or `none`")
    zone_mode: ZoneMode = "sequence"
    tracking: Tracking = Tracking()
    on_account_reply: AccountReply = AccountReply()


class CreateSequence(SequenceDefinition, Command):
    service: ClassVar[str] = "enrollment"


def _settings_model(name: str, optional: bool, doc: str) -> type[BaseModel]:
    """A model of every field of SequenceDefinition but `steps`, made from it, so a setting added
    there is a setting here too: all required as they are (the settings after a change) or all
    optional (the fields a change names; absent or null: unchanged)."""
    def optional_field(info):  # the same checks of a given value (kept in `metadata`)
        kind = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        return kind | None, None

    fields = {field: optional_field(info) if optional else (info.annotation, info)
              for field, info in SequenceDefinition.model_fields.items() if field != "steps"}
    return create_model(name, __config__=ConfigDict(frozen=True, extra="forbid"),
                        __doc__=doc, __module__=__name__, **fields)


SequenceSettings = _settings_model(
    "SequenceSettings", False, "Every setting of a sequence (all but its steps).")
SequenceSettingsChanges = _settings_model(
    "SequenceSettingsChanges", True,
    "HTTP body of `PATCH /v1/sequences/{sequence_id}`: the settings to change (absent or null:"
    " unchanged). A new window, holiday calendar or zone mode re-plans pending steps.")


class ChangeSequenceSettings(Command):
    """Change settings of a saved sequence: its pending steps are re-planned by the new rules;
    nothing sent is touched and nothing fires at once because of the change."""

    service: ClassVar[str] = "enrollment"
    sequence_id: uuid.UUID
    changes: SequenceSettingsChanges


class WorkspaceCalendar(BaseModel):
    """HTTP body of `PUT /v1/calendar`: the workspace's default public holidays (for sequences
    whose `holidays` is `workspace`), its own skip dates (for every sequence) and the send window
    new sequences start with in the builder. With `expected_version` (the `version` last read)
    the change is refused (409, field `expected_version`) when someone changed the calendar
    since: nobody's skip date is lost to a concurrent edit."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    holidays: HolidayCalendar | None = None
    skip_dates: Annotated[list[SkipDate], Field(max_length=400)] = []
    send_window: SendWindow | None = None
    expected_version: Annotated[int, Field(ge=0)] | None = None


class SetWorkspaceCalendar(WorkspaceCalendar, Command):
    service: ClassVar[str] = "enrollment"


class GetWorkspaceCalendar(Query):
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
    # (a factory: a default of [] was deep-copied for each row, most of a CSV row's check)
    tags: Labels = Field(default_factory=list, json_schema_extra={"default": []})
    lists: Labels = Field(default_factory=list, json_schema_extra={"default": []})
    timezone: TimezoneName | None = Field(
        default=None, examples=["Asia/Seoul"],
        description="IANA name; sequences sending in the contact's zone use it (null: not"
                    " known, they send in the sequence's zone)")


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
    timezone: TimezoneChange | None = Field(
        default=None, description='IANA name, e.g. "Asia/Seoul"; "" or null clears it (the'
                                  " contact's sequences then send in the sequence's zone)")


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
    source: Literal["manual", "unsubscribe-link", "one-click", "import", "reply"] = "manual"
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


# --- enrollment service: the suppression list --------------------------------------------------


class SuppressionEntry(BaseModel):
    """HTTP body of `POST /v1/suppressions`: an address, or a whole domain (`example.com`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    value: SuppressionValue = Field(examples=["kim@customer.example", "competitor.example"])
    note: Annotated[SingleLine, Field(max_length=500)] = ""


class AddSuppressions(Command):
    """Put addresses or domains on the workspace's do-not-contact list (one already on it stays
    as it was). Active enrollments of the contacts it covers are not stopped: their next email
    is held at send."""

    service: ClassVar[str] = "enrollment"
    entries: list[SuppressionEntry] = Field(min_length=1, max_length=5000)
    reason: Literal["manual", "import"] = "manual"


class RemoveSuppression(Command):
    service: ClassVar[str] = "enrollment"
    value: SuppressionValue


class ListSuppressions(Query):
    service: ClassVar[str] = "enrollment"
    q: Annotated[SingleLine, Field(max_length=254)] | None = None  # part of the value
    page: Page = Field(default_factory=lambda: Page())


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
    # in this contact's zone, when the sequence sends in each contact's zone
    contact_id: uuid.UUID | None = None


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


class GetEnrolleeTable(ListEnrollments):
    """What the web app's enrollee table shows: the sequence and a page of its enrollees, in one
    request (contracts.views.EnrolleeTable); the page polls it every few seconds."""


class GetSequenceAnalytics(Query):
    """A sequence's analytics over UTC days `since` to `until` (both included; at most ten
    years): contracts.views.SequenceAnalytics."""

    service: ClassVar[str] = "enrollment"
    sequence_id: uuid.UUID
    since: date
    until: date

    @model_validator(mode="after")
    def _a_range(self):
        if self.until < self.since:
            raise ValueError("`to` is before `from`")
        if (self.until - self.since).days > 3660:
            raise ValueError("the range is longer than ten years")
        return self


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


class GetMailboxDeliverability(Query):
    """The mailer's side of the sender mailboxes of these addresses: sender-side rejections
    in the last window, and whether sends are paused (and why)."""

    service: ClassVar[str] = "mailer"
    addresses: Annotated[list[Email], Field(max_length=1000)]


class ResumeMailbox(Command):
    """Let a paused sender mailbox send again (a person decided the cause is fixed)."""

    service: ClassVar[str] = "mailer"
    address: Email
    by: Annotated[SingleLine, Field(max_length=254)] = "api"


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


class ResumeEnrollment(Command):
    """End an enrollment's pause (out of office, a colleague's reply) now."""

    service: ClassVar[str] = "enrollment"
    enrollment_id: uuid.UUID
    by: Annotated[str, Field(max_length=320)] = "api"


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
    """From the gateway, when an email's tracking pixel is loaded (token already verified).
    The request's facts decide whether a person or a machine opened it
    (`sequences/machine_rules.py`); absent in commands of older gateways."""

    service: ClassVar[str] = "mailer"
    enrollment_id: uuid.UUID
    step_id: uuid.UUID
    request: TrackedRequest | None = None


class VariantWinnerChoice(BaseModel):
    """HTTP body of `POST /v1/sequences/{sequence_id}/variants/winner`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    letter: Literal["A", "B", "C"]


class ChooseVariantWinner(VariantWinnerChoice, Command):
    """A winner chosen by hand: new sends of every step with variants use its letter."""

    service: ClassVar[str] = "mailer"
    sequence_id: uuid.UUID
    chosen_by: Annotated[str, Field(max_length=320)] = ""


class RecordEmailClick(Command):
    """From the gateway, when a tracked link of an email is followed (token already verified,
    the reader already sent on to `url`)."""

    service: ClassVar[str] = "mailer"
    enrollment_id: uuid.UUID
    step_id: uuid.UUID
    link_index: int = Field(ge=0)
    url: Annotated[str, Field(max_length=4000)]
    request: TrackedRequest


class SeenClick(BaseModel):
    """One followed link as the gateway saw it, for `RecordEmailClicks`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    # the gateway's id for this click: a batch sent again (a lost reply) records it once
    click_id: uuid.UUID
    enrollment_id: uuid.UUID
    step_id: uuid.UUID
    link_index: int = Field(ge=0)
    url: Annotated[str, Field(max_length=4000)]
    request: TrackedRequest
    # how long before the batch was sent the reader clicked (the gateway's own elapsed time, so
    # the mailer's clock places the click without the two clocks having to agree)
    seconds_ago: float = Field(ge=0, le=86_400)


class RecordEmailClicks(Command):
    """From the gateway: the clicks of the last moments, batched (the redirects were answered
    at once); each recorded like `RecordEmailClick`, a repeated `click_id` once."""

    service: ClassVar[str] = "mailer"
    clicks: Annotated[list[SeenClick], Field(min_length=1, max_length=1000)]


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

    deliverable = EVENT_TYPES.keys() - UNDELIVERED_TYPES
    if unknown := [t for t in types if t != "*" and t not in deliverable]:
        raise ValueError(f"unknown event type {unknown[0]!r}: one of"
                         f" {', '.join(sorted(deliverable))} or '*' (every type)")
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
    # ours when not given (32 random bytes); a caller's must be in the `whsec_<base64>` form
    secret: WebhookSecret | None = None
    # also send the deprecated `Sequences-*` headers (for receivers not yet on Standard Webhooks)
    legacy_headers: bool = False


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


class WebhookChanges(BaseModel):
    """HTTP body of `PATCH /v1/webhooks/{id}`: the fields given change."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    legacy_headers: bool | None = None
    description: Annotated[SingleLine, Field(max_length=200)] | None = None


class ChangeWebhook(WebhookChanges, Command):
    service: ClassVar[str] = "webhooks"
    webhook_id: uuid.UUID


# a grace period is at most a week: receivers update their secret within it
LONGEST_GRACE_SECONDS = 7 * 24 * 3600


class SecretRotation(BaseModel):
    """HTTP body of `POST /v1/webhooks/{id}/secret/rotate`: a new secret (ours when not given)
    signs from now on; the current one signs too, beside it, for the grace period, then stops."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    secret: WebhookSecret | None = None
    grace_period_seconds: int = Field(default=24 * 3600, ge=0, le=LONGEST_GRACE_SECONDS)


class RotateWebhookSecret(SecretRotation, Command):
    """Refused (409, `secret`) while another rotation's grace period runs."""

    service: ClassVar[str] = "webhooks"
    webhook_id: uuid.UUID


class EndSecretRotation(Command):
    """End the running rotation's grace period now: only the new secret signs."""

    service: ClassVar[str] = "webhooks"
    webhook_id: uuid.UUID


class RedeliverWebhook(Command):
    """Deliver one event again, now (after it failed, or to replay it)."""

    service: ClassVar[str] = "webhooks"
    webhook_id: uuid.UUID
    delivery_id: uuid.UUID


# --- mailer: the workspace's mailboxes ---------------------------------------------------------

Host = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]*$",
                            examples=["smtp.gmail.com"])]
Port = Annotated[int, Field(ge=1, le=65535)]
# a password or client secret: kept encrypted, never shown again, never logged
Secret = Annotated[SingleLine, Field(min_length=1, max_length=2000)]
Folder = Annotated[SingleLine, Field(min_length=1, max_length=200)]


class SmtpServer(BaseModel):
    """How the mailbox sends. `username` defaults to the mailbox's address; with the password
    auth and no `password`, the server is used without AUTH (a relay that trusts the network)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    host: Host
    port: Port = 587
    security: MailSecurity = "starttls"
    username: Annotated[SingleLine, Field(max_length=320)] = ""
    password: Secret | None = None


class ImapServer(BaseModel):
    """How the mailbox is read for replies and bounces (IDLE where the server offers it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    host: Host
    port: Port = 993
    security: MailSecurity = "tls"
    username: Annotated[SingleLine, Field(max_length=320)] = ""
    password: Secret | None = None
    folders: Annotated[list[Folder], Field(min_length=1, max_length=20)] = ["INBOX"]
    idle: bool = True


class MailboxRequest(BaseModel):
    """HTTP body of `POST /v1/mailboxes` and `PUT /v1/mailboxes/{mailbox_id}` (where a password
    left out keeps the stored one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    address: Email
    display_name: Annotated[SingleLine, Field(max_length=200)] = ""
    owner_user_id: uuid.UUID | None = None
    auth: MailboxAuth = "password"
    oauth_provider: OAuthProvider | None = Field(default=None, validate_default=True)
    smtp: SmtpServer
    imap: ImapServer | None = None
    limits: MailboxLimits = MailboxLimits()

    # field by field (not one model check), so that a refusal names its field
    @field_validator("oauth_provider")
    @classmethod
    def _provider_fits(cls, provider, info: ValidationInfo):
        if info.data.get("auth") == "oauth2" and provider is None:
            raise ValueError("google or microsoft, for auth oauth2")
        if info.data.get("auth") == "password" and provider is not None:
            raise ValueError("only with auth oauth2")
        return provider

    @field_validator("smtp", "imap")
    @classmethod
    def _no_password_with_oauth(cls, server, info: ValidationInfo):
        if server is not None and server.password and info.data.get("auth") == "oauth2":
            raise ValueError("no password with auth oauth2: the consent flow gives a token")
        return server


class ConnectMailbox(MailboxRequest, Command):
    service: ClassVar[str] = "mailer"


class ChangeMailbox(MailboxRequest, Command):
    service: ClassVar[str] = "mailer"
    mailbox_id: uuid.UUID


class DisconnectMailbox(Command):
    """The mailbox and its secrets are deleted; sequences naming it hold their emails."""

    service: ClassVar[str] = "mailer"
    mailbox_id: uuid.UUID


class ListMailboxes(Query):
    service: ClassVar[str] = "mailer"


class GetMailbox(Query):
    service: ClassVar[str] = "mailer"
    mailbox_id: uuid.UUID


class TestMailboxSmtp(Command):
    """Log in to the mailbox's SMTP server now: the exact answer when it fails."""

    service: ClassVar[str] = "mailer"
    mailbox_id: uuid.UUID


class TestMailboxImap(Command):
    """Log in to the mailbox's IMAP server now and open its folders."""

    service: ClassVar[str] = "thread-watcher"
    mailbox_id: uuid.UUID


# --- mailer: OAuth2 clients of the workspace and the consent flow of a mailbox ----------------


def _endpoint(url: str) -> str:
    """https, or http on loopback only (a local authorization server: development, tests)."""
    parts = urlsplit(url)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValueError("must be an https:// URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    return url


OAuthEndpoint = Annotated[str, Field(min_length=8, max_length=2000, pattern=r"^\S+$"),
                          AfterValidator(_endpoint)]
OAuthScope = Annotated[str, Field(min_length=1, max_length=300, pattern=r"^\S+$")]


class OAuthClientRequest(BaseModel):
    """HTTP body of `PUT /v1/mailboxes/oauth-clients/{provider}`: the workspace's own OAuth
    client at Google or Microsoft (its client id and secret). The endpoints and scopes default
    to the provider's; a secret left out keeps the stored one."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    client_id: Annotated[SingleLine, Field(min_length=1, max_length=500)]
    client_secret: Secret | None = None
    authorize_url: OAuthEndpoint | None = None
    token_url: OAuthEndpoint | None = None
    scopes: Annotated[list[OAuthScope], Field(min_length=1, max_length=20)] | None = None


class SetOAuthClient(OAuthClientRequest, Command):
    service: ClassVar[str] = "mailer"
    provider: OAuthProvider


class ListOAuthClients(Query):
    service: ClassVar[str] = "mailer"


class StartMailboxConsent(Command):
    """The provider's consent page for an OAuth2 mailbox (authorization code with PKCE); the
    provider sends the browser back to `redirect_uri` with a code."""

    service: ClassVar[str] = "mailer"
    mailbox_id: uuid.UUID
    redirect_uri: OAuthEndpoint
    consent_id: uuid.UUID
    # opaque to the mailer: the gateway's signed token naming the workspace and the consent
    state: Annotated[str, Field(min_length=1, max_length=1000, pattern=r"^[A-Za-z0-9._-]+$")]


class FinishMailboxConsent(Command):
    """The provider called back: exchange the code for tokens, keep them sealed."""

    service: ClassVar[str] = "mailer"
    consent_id: uuid.UUID
    code: Annotated[SingleLine, Field(min_length=1, max_length=4000)]
