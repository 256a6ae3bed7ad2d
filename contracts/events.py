"""Every event of the system, grouped by the stream category it is appended to.

Streams are `<category>-<id>`: `sequence-…`, `contact-…`, `enrollment-…`, `schedule-…` (the
scheduler's decisions about one enrollment), `delivery-…` (the mailer's sends for one
enrollment), `inbox-…` (replies and auto-replies the thread-watcher found for one enrollment)
`bounce-…` (bounces of one enrollment's mail, from SMTP or from the mailbox) and `import-…` (the
contacts one chunk of a CSV import created). A breaking change to an event is a new
`schema_version` with an upcaster in
`contracts/upcasters.py`.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.base import Event, EventEnvelope, current_data, register, stream_id
from contracts.commands import SequenceSettings
from contracts.texts import Text
from contracts.values import (
    AccountReply,
    DEFAULT_LANGUAGE,
    BounceClass,
    BounceReason,
    Channel,
    Email,
    HolidayCalendar,
    HolidayChoice,
    Language,
    MailboxPool,
    ReplyIntent,
    ScheduleMove,
    SkipDate,
    SendPolicy,
    SendWindow,
    SingleLine,
    Step,
    TimezoneName,
    Tracking,
    ZoneMode,
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
    mailbox_pool: MailboxPool = []  # added later with a default: none before it
    # added later with defaults (no new version): what events before them meant
    holidays: HolidayChoice = "workspace"
    zone_mode: ZoneMode = "sequence"
    tracking: Tracking = Tracking()  # added later: sequences before it tracked opens
    on_account_reply: AccountReply = AccountReply()  # added later: before it, stop (the default)


class SequenceSettingsChanged(SequenceEvent):
    """Settings of a saved sequence changed: `settings` is every setting after the change,
    `changed` names those that changed. Pending steps are re-planned by the new rules."""

    settings: SequenceSettings
    changed: list[str] = Field(min_length=1)


class SequenceStepsChanged(SequenceEvent):
    """The steps were edited: what enrollees already ran stays; pending steps are re-planned."""

    steps: list[Step] = Field(min_length=1)


class SequencePaused(SequenceEvent):
    paused_at: datetime
    # added later with a default (no new version): why, when it was not a person (the
    # bounce-rate guard says its numbers); None for a pause by hand
    reason: str | None = None


class SequenceResumed(SequenceEvent):
    resumed_at: datetime


class SequenceArchived(SequenceEvent):
    archived_at: datetime


class SequenceStepFlagged(SequenceEvent):
    """A recipient's server rejected this step's content (spam, virus, too big): the step needs
    editing. Editing its subject or body clears the flag."""

    step_id: uuid.UUID
    reason: BounceReason
    diagnostic: str = Field(default="", max_length=1000)
    flagged_at: datetime


class CalendarEvent(Event):
    category: ClassVar[str] = "calendar"
    stream_key: ClassVar[str] = "workspace_id"
    workspace_id: uuid.UUID


class WorkspaceCalendarChanged(CalendarEvent):
    """The workspace's default public holidays, its own skip dates and its default send window
    (new sequences start with it), as they are now."""

    holidays: HolidayCalendar | None = None
    skip_dates: list[SkipDate] = []
    send_window: SendWindow | None = None


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
    timezone: str | None = None  # IANA name; None: not known (events before it too)


class ContactUpdated(ContactEvent):
    """Only the fields that changed, with their new values (`timezone` is "" when cleared)."""

    changes: dict[str, str | list[str]]


class ContactDeleted(ContactEvent):
    deleted_at: datetime


class ContactOptedOut(ContactEvent):
    """The contact asked not to be mailed again: every active enrollment of theirs stops."""

    opted_out_at: datetime
    # "reply": the contact's reply asked for it ("please remove me", "수신거부")
    source: Literal["manual", "unsubscribe-link", "one-click", "import", "reply"]
    reason: str | None = None


class ImportedContact(BaseModel):
    """One contact created by an import: its id and the fields of its `ContactCreated`. They
    were validated as the import command's `ContactFields` (stricter: lengths, single lines,
    the address), so they are not checked again here, thousands at a time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    contact_id: uuid.UUID
    name: str = ""
    company: str = ""
    job_title: str = ""
    owner_name: str = ""
    email: str
    phone: str = ""
    status: str = ""
    tags: list[str] = Field(default_factory=list, json_schema_extra={"default": []})
    lists: list[str] = Field(default_factory=list, json_schema_extra={"default": []})
    timezone: str | None = None


class ImportEvent(Event):
    category: ClassVar[str] = "import"
    stream_key: ClassVar[str] = "import_id"
    import_id: uuid.UUID


class ContactsImported(ImportEvent):
    """Contacts an import created, up to a few thousand in one event (a chunk of the file): one
    append, one message and one consumer position a chunk instead of a contact. Each contact
    is as created by a `ContactCreated` of its own; its stream `contact-<contact_id>` begins
    here (the event log's `stream_origins` says where) and holds its later events from version
    1 on. Webhooks deliver each contact as a `ContactCreated`."""

    contacts: list[ImportedContact] = Field(min_length=1)

    def begun_streams(self) -> list[str]:
        return [stream_id("contact", c.contact_id) for c in self.contacts]


def imported_row(origin: EventEnvelope, contact_id: uuid.UUID) -> dict:
    """The row of a contact whose stream begins in `origin` (its import's `ContactsImported`,
    as the log's `read_origins` finds it): the data of the `ContactCreated` it stands for
    (`ContactCreated.model_validate` makes it one). A chunk's rows are indexed once, for the
    many contacts of one chunk a repeated import looks at."""
    rows = _imported_rows.get(origin.event_id)
    if rows is None:
        rows = {row["contact_id"]: row for row in current_data(origin)["contacts"]}
        if len(_imported_rows) >= 4:
            _imported_rows.pop(next(iter(_imported_rows)))
        _imported_rows[origin.event_id] = rows
    return rows[str(contact_id)]


# a few chunks' rows by contact id, by event id (events never change)
_imported_rows: dict[uuid.UUID, dict[str, dict]] = {}


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
    contact_timezone: str | None = None  # the contact's own zone at enrollment, if it has one


class EnrollmentContactZoneChanged(EnrollmentEvent):
    """The enrolled contact's own timezone changed (None: cleared): the pending step is
    re-planned in the new zone when the sequence sends in each contact's zone."""

    contact_timezone: str | None = None
    changed_at: datetime


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
    reason_text: Text | None = None  # the same, in any language (contracts/texts.py)
    # added later with defaults: the zone it is planned in, and why the window, holidays or
    # skip dates moved it past its due moment
    zone: str | None = None
    moved: list[ScheduleMove] = []


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


class VariantAssigned(DeliveryEvent):
    """The enrollment's A/B letter, kept for every step with variants (sequences/variants.py:
    deterministic from the sequence id as seed, the enrollment id and the weights). Recorded
    when its first step with variants goes out (the letter it would have got at enrollment)."""

    sequence_id: uuid.UUID
    letter: Literal["A", "B", "C"]
    assigned_at: datetime


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
    # added later with a default: the A/B variant whose subject and body went (None: none)
    variant: Literal["A", "B", "C"] | None = None


class EnrollmentNeedsAttention(EnrollmentEvent):
    """A step could not go out (an empty merge value, a failed send): held until retried."""

    step_id: uuid.UUID
    reason: str
    reason_text: Text | None = None  # the same, in any language (contracts/texts.py)


class EnrollmentRetried(EnrollmentEvent):
    """Someone fixed the cause and asked to try the held step again."""

    step_id: uuid.UUID
    retried_at: datetime


class EnrollmentReplied(EnrollmentEvent):
    """The contact answered: no further step runs."""

    reply_message_id: str
    replied_at: datetime
    intent: ReplyIntent = "other"  # added later with a default: the reply's (ReplyDetected)


class EnrollmentBounced(EnrollmentEvent):
    """The contact's address bounced (hard): no further step runs."""

    bounced_at: datetime
    reason: str
    # added later with defaults (no new version): the bounce's class, and whether the SMTP
    # server refused it at send time (then it never counted as sent): the bounce-rate guard's
    # numbers
    bounce_class: BounceClass = "unknown"
    at_send: bool = False
    reason_text: Text | None = None  # the reason in any language (contracts/texts.py)


class EnrollmentPaused(EnrollmentEvent):
    """The next step waits until `until` (an out-of-office answer, a colleague's reply); the
    scheduler plans it at the first send moment from then. Resumed by EnrollmentResumed, or
    when `until` passes."""

    paused_at: datetime
    until: datetime
    reason: Literal["out-of-office", "account-reply"]
    return_date: date | None = None  # the date the auto-reply named, when it named one
    note: str | None = None  # what decided `until` ("no return date found: 7 days")


class EnrollmentResumed(EnrollmentEvent):
    """Someone resumed a paused enrollment before its `until`: the next step is planned now."""

    resumed_at: datetime
    by: str  # who (a user's email, or "api")


class EnrollmentStopped(EnrollmentEvent):
    """Stopped by hand or because the contact opted out."""

    stopped_at: datetime
    reason: str | None = None
    # our own reasons in any language (contracts/texts.py); a person's own words have none
    reason_text: Text | None = None


class EmailHeld(DeliveryEvent):
    """Not sent: rendering would leave a gap ("Hi ,") or break a header."""

    sequence_id: uuid.UUID
    step_id: uuid.UUID
    step_index: int = Field(ge=0)
    reason: str
    reason_text: Text | None = None  # the same, in any language (contracts/texts.py)


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
    reason_text: Text | None = None  # the same, in any language (contracts/texts.py)


class EmailOpened(DeliveryEvent):
    """The open-tracking pixel of one email was loaded. `machine`: by a proxy or scanner, not a
    person, by the rule named in `machine_rule` (sequences/machine_rules.py); kept, not deleted,
    and counted apart. Added later with defaults: opens before them read as a person's."""

    step_id: uuid.UUID
    message_id: str
    opened_at: datetime
    machine: bool = False
    machine_rule: str | None = None


class EmailClicked(DeliveryEvent):
    """A tracked link of one email was followed (`link_index`: its place in the body). `machine`
    and `machine_rule` as for EmailOpened."""

    step_id: uuid.UUID
    message_id: str
    link_index: int = Field(ge=0)
    url: str
    clicked_at: datetime
    machine: bool = False
    machine_rule: str | None = None


class ExperimentEvent(Event):
    """A/B decisions of one sequence."""

    category: ClassVar[str] = "experiment"
    stream_key: ClassVar[str] = "sequence_id"
    sequence_id: uuid.UUID


class VariantWinnerChosen(ExperimentEvent):
    """From now on every email of a step with variants uses `letter`'s subject and body (what
    was sent stays). `by`: a person (`hand`, with who) or the rule of sequences/variants.py."""

    letter: Literal["A", "B", "C"]
    by: Literal["hand", "automatic"]
    chosen_by: str = ""
    chosen_at: datetime


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
    # added later with defaults (no new version): what the reply wants, read from its own words
    # (sequences/reply_intent.py), and the rule that decided it (None: no rule matched)
    intent: ReplyIntent = "other"
    intent_rule: str | None = None


class AutoReplyDetected(InboxEvent):
    """An out-of-office or other automatic answer: not a reply; the enrollment pauses until its
    writer is back (EnrollmentPaused)."""

    message_id: str
    sender: str
    received_at: datetime
    reason: str
    # added later with defaults (no new version): the return date its text names
    # (sequences/out_of_office.py; None: none found, impossible, or more than 90 days out) and
    # what was found
    return_date: date | None = None
    return_note: str | None = None


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
    # added later with defaults (no new schema version): what the classifier decided and by
    # which rule of its table (`sequences mail classify` prints the same)
    bounce_class: BounceClass = "unknown"
    reason: BounceReason = "unclassified"
    rule: str = ""


class SuppressionEvent(Event):
    """The workspace's do-not-contact list: one stream per address or domain on it."""

    category: ClassVar[str] = "suppression"
    stream_key: ClassVar[str] = "suppression_id"
    suppression_id: uuid.UUID  # derived from (workspace, value): see `suppression_id_for`


SuppressionKind = Literal["address", "domain"]
SuppressionReason = Literal["bounced", "manual", "import"]


class AddressSuppressed(SuppressionEvent):
    """No sequence mails this address (or any address of this domain) any more."""

    value: str  # lowercased address, or domain
    kind: SuppressionKind
    reason: SuppressionReason
    note: str = Field(default="", max_length=500)
    added_at: datetime


class SuppressionRemoved(SuppressionEvent):
    value: str
    removed_at: datetime


class MailboxEvent(Event):
    """The mailer's state of one sender mailbox, keyed by its address (lowercased)."""

    category: ClassVar[str] = "mailbox"
    stream_key: ClassVar[str] = "address"
    address: str


class MailboxPaused(MailboxEvent):
    """Sender-side rejections passed the threshold: no email goes out from this address until
    someone resumes it."""

    paused_at: datetime
    reason: str
    bounce_reason: BounceReason | None = None


class MailboxResumed(MailboxEvent):
    resumed_at: datetime
    by: str  # who resumed it (a user's email, or "api")


register(
    SequenceStepFlagged,
    AddressSuppressed,
    SuppressionRemoved,
    MailboxPaused,
    MailboxResumed,
    EnrollmentNeedsAttention,
    EnrollmentRetried,
    EmailHeld,
    EmailFailed,
    EmailDeferred,
    EmailOpened,
    EmailClicked,
    VariantAssigned,
    VariantWinnerChosen,
    TestEmailSent,
    TaskDue,
    TaskCompleted,
    ContactUpdated,
    ContactDeleted,
    ContactOptedOut,
    StepScheduled,
    SequenceCreated,
    SequenceStepsChanged,
    SequenceSettingsChanged,
    WorkspaceCalendarChanged,
    SequencePaused,
    SequenceResumed,
    SequenceArchived,
    ContactCreated,
    ContactsImported,
    ContactEnrolled,
    EnrollmentContactZoneChanged,
    EnrollmentStepCompleted,
    EnrollmentCompleted,
    StepDue,
    EmailSent,
    EnrollmentReplied,
    EnrollmentBounced,
    EnrollmentStopped,
    EnrollmentPaused,
    EnrollmentResumed,
    ReplyDetected,
    AutoReplyDetected,
    BounceDetected,
)
