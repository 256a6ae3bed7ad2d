"""Every event of the system, grouped by the stream category it is appended to.

Streams are `<category>-<id>`: `sequence-…`, `contact-…`, `enrollment-…`, `schedule-…` (the
scheduler's decisions about one enrollment), `delivery-…` (the mailer's sends for one
enrollment), `inbox-…` (replies and auto-replies the thread-watcher found for one enrollment)
and `bounce-…` (bounces of one enrollment's mail, from SMTP or from the mailbox). A breaking change to an event is a new `schema_version` with an upcaster in
`contracts/upcasters.py`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from contracts.base import Event, register
from contracts.values import (
    DEFAULT_LANGUAGE,
    Channel,
    Email,
    Language,
    SendPolicy,
    SingleLine,
    Step,
    TimezoneName,
)


class SequenceEvent(Event):
    category: ClassVar[str] = "sequence"
    stream_key: ClassVar[str] = "sequence_id"
    sequence_id: uuid.UUID


class SequenceCreated(SequenceEvent):
    """A sequence was saved; it is live from now on."""

    name: SingleLine
    purpose: str | None = None
    sender_name: SingleLine
    sender_email: Email
    timezone: TimezoneName
    send_policy: SendPolicy
    steps: list[Step] = Field(min_length=1)
    # added later with a default: events written before it read as English (no new version)
    language: Language = DEFAULT_LANGUAGE


class SequenceStepsChanged(SequenceEvent):
    """The steps were edited: what enrollees already ran stays; pending steps are re-planned."""

    steps: list[Step] = Field(min_length=1)


class SequencePaused(SequenceEvent):
    paused_at: datetime


class SequenceResumed(SequenceEvent):
    resumed_at: datetime


class SequenceArchived(SequenceEvent):
    archived_at: datetime


class ContactEvent(Event):
    category: ClassVar[str] = "contact"
    stream_key: ClassVar[str] = "contact_id"
    contact_id: uuid.UUID


class ContactCreated(ContactEvent):
    name: SingleLine = ""
    company: SingleLine = ""
    job_title: SingleLine = ""
    owner_name: SingleLine = ""
    email: Email
    phone: SingleLine = ""
    status: SingleLine = ""
    tags: list[str] = []
    lists: list[str] = []


class ContactUpdated(ContactEvent):
    """Only the fields that changed, with their new values."""

    changes: dict[str, str | list[str]]


class ContactDeleted(ContactEvent):
    deleted_at: datetime


class ContactOptedOut(ContactEvent):
    """The contact asked not to be mailed again: every active enrollment of theirs stops."""

    opted_out_at: datetime
    source: Literal["manual", "unsubscribe-link", "one-click", "import"]
    reason: str | None = None


class EnrollmentEvent(Event):
    category: ClassVar[str] = "enrollment"
    stream_key: ClassVar[str] = "enrollment_id"
    enrollment_id: uuid.UUID


class ContactEnrolled(EnrollmentEvent):
    sequence_id: uuid.UUID
    contact_id: uuid.UUID
    enrolled_at: datetime
    email: str  # the address at enrollment (a bounced address is not enrolled again)
    attempt: int = Field(default=1, ge=1)  # 2 and up: re-enrolled after an earlier one ended


class EnrollmentStepCompleted(EnrollmentEvent):
    """A step of this enrollment is done (email sent, or task done); the next one may be planned."""

    step_id: uuid.UUID
    step_index: int = Field(ge=0)  # its position when it ran
    channel: Channel
    completed_at: datetime
    message_id: str | None = None


class EnrollmentCompleted(EnrollmentEvent):
    """The last step is done: the enrollment is Done."""

    completed_at: datetime


class ScheduleEvent(Event):
    category: ClassVar[str] = "schedule"
    stream_key: ClassVar[str] = "enrollment_id"
    enrollment_id: uuid.UUID


class StepScheduled(ScheduleEvent):
    """The next step of this enrollment is planned for `due_at` (held while the sequence is
    paused). Planned again when a wait, the steps or the sequence's state change."""

    step_id: uuid.UUID
    step_index: int = Field(ge=0)
    due_at: datetime
    held: bool = False
    reason: str | None = None  # why it moved, e.g. deferred by a mailbox's daily cap


class StepDue(ScheduleEvent):
    """The step's moment has come: the mailer sends an email step, or makes a task of an SMS or
    call step."""

    sequence_id: uuid.UUID
    contact_id: uuid.UUID
    step_id: uuid.UUID
    step_index: int = Field(ge=0)
    channel: Channel
    due_at: datetime


class DeliveryEvent(Event):
    category: ClassVar[str] = "delivery"
    stream_key: ClassVar[str] = "enrollment_id"
    enrollment_id: uuid.UUID


class EmailSent(DeliveryEvent):
    """The SMTP server accepted the email of one step."""

    sequence_id: uuid.UUID
    contact_id: uuid.UUID
    step_id: uuid.UUID
    step_index: int = Field(ge=0)
    message_id: str
    recipient: Email
    subject: str
    sent_at: datetime
    in_reply_to: str | None = None
    references: list[str] = []


class EnrollmentNeedsAttention(EnrollmentEvent):
    """A step could not go out (an empty merge value, a failed send): held until retried."""

    step_id: uuid.UUID
    reason: str


class EnrollmentRetried(EnrollmentEvent):
    """Someone fixed the cause and asked to try the held step again."""

    step_id: uuid.UUID
    retried_at: datetime


class EnrollmentReplied(EnrollmentEvent):
    """The contact answered: no further step runs."""

    reply_message_id: str
    replied_at: datetime


class EnrollmentBounced(EnrollmentEvent):
    """The contact's address bounced (hard): no further step runs."""

    bounced_at: datetime
    reason: str


class EnrollmentStopped(EnrollmentEvent):
    """Stopped by hand or because the contact opted out."""

    stopped_at: datetime
    reason: str | None = None


class EmailHeld(DeliveryEvent):
    """Not sent: rendering would leave a gap ("Hi ,") or break a header."""

    sequence_id: uuid.UUID
    step_id: uuid.UUID
    step_index: int = Field(ge=0)
    reason: str


class EmailFailed(DeliveryEvent):
    """Not sent: the SMTP server kept refusing for a while (4xx past the retry bound)."""

    sequence_id: uuid.UUID
    step_id: uuid.UUID
    step_index: int = Field(ge=0)
    reason: str
    smtp_code: int | None = None
    attempts: int


class EmailDeferred(DeliveryEvent):
    """Not yet: the sender mailbox's daily cap or minimum gap moves it to `until`."""

    step_id: uuid.UUID
    until: datetime
    reason: str


class EmailOpened(DeliveryEvent):
    """The open-tracking pixel of one email was loaded."""

    step_id: uuid.UUID
    message_id: str
    opened_at: datetime


class TestEmailEvent(Event):
    category: ClassVar[str] = "testmail"
    stream_key: ClassVar[str] = "sequence_id"
    sequence_id: uuid.UUID


class TestEmailSent(TestEmailEvent):
    """"Send test to me": recorded apart from enrollments, so no count changes."""

    __test__ = False  # not a pytest class
    step_id: uuid.UUID
    recipient: str
    message_id: str
    sent_at: datetime


class TaskEvent(Event):
    """SMS and call steps are never sent by the system: they become tasks for the owner."""

    category: ClassVar[str] = "task"
    stream_key: ClassVar[str] = "task_id"
    task_id: uuid.UUID


class TaskDue(TaskEvent):
    enrollment_id: uuid.UUID
    sequence_id: uuid.UUID
    contact_id: uuid.UUID
    step_id: uuid.UUID
    step_index: int = Field(ge=0)
    channel: Channel
    owner_name: str
    instructions: str  # the step's body, merged for this contact
    due_at: datetime


class TaskCompleted(TaskEvent):
    enrollment_id: uuid.UUID
    step_id: uuid.UUID
    outcome: Literal["done", "skipped"]
    note: str | None = None
    completed_at: datetime


class InboxEvent(Event):
    """What the thread-watcher read in a sender's mailbox about one enrollment."""

    category: ClassVar[str] = "inbox"
    stream_key: ClassVar[str] = "enrollment_id"
    enrollment_id: uuid.UUID


class ReplyDetected(InboxEvent):
    message_id: str  # the reply's own Message-ID
    in_reply_to: str | None = None  # the message of ours it answers, when known
    sender: str
    received_at: datetime
    excerpt: str = Field(default="", max_length=500)
    matched_by: str  # "headers" (In-Reply-To / References) or "subject" (fallback)


class AutoReplyDetected(InboxEvent):
    """An out-of-office or other automatic answer: recorded, and the enrollment carries on."""

    message_id: str
    sender: str
    received_at: datetime
    reason: str


class BounceEvent(Event):
    """Bounces come from the mailer (SMTP 5xx) and from the thread-watcher (DSNs in mailboxes)."""

    category: ClassVar[str] = "bounce"
    stream_key: ClassVar[str] = "enrollment_id"
    enrollment_id: uuid.UUID


class BounceDetected(BounceEvent):
    recipient: str
    kind: Literal["hard", "soft"]
    status: str | None = None  # enhanced status code such as 5.1.1, or the SMTP reply code
    diagnostic: str = Field(default="", max_length=1000)
    original_message_id: str | None = None
    detected_by: Literal["smtp", "mailbox"]
    detected_at: datetime


register(
    EnrollmentNeedsAttention,
    EnrollmentRetried,
    EmailHeld,
    EmailFailed,
    EmailDeferred,
    EmailOpened,
    TestEmailSent,
    TaskDue,
    TaskCompleted,
    ContactUpdated,
    ContactDeleted,
    ContactOptedOut,
    StepScheduled,
    SequenceCreated,
    SequenceStepsChanged,
    SequencePaused,
    SequenceResumed,
    SequenceArchived,
    ContactCreated,
    ContactEnrolled,
    EnrollmentStepCompleted,
    EnrollmentCompleted,
    StepDue,
    EmailSent,
    EnrollmentReplied,
    EnrollmentBounced,
    EnrollmentStopped,
    ReplyDetected,
    AutoReplyDetected,
    BounceDetected,
)
