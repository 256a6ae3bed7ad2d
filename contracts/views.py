"""What the API answers with: read models projected from the log."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Mapping
from enum import StrEnum

from pydantic import BaseModel

from contracts.texts import Text
from contracts.values import (
    AccountReply,
    HolidayCalendar,
    HolidayChoice,
    Language,
    MailboxLimits,
    ReplyIntent,
    ScheduleMove,
    SendPolicy,
    SendWindow,
    SkipDate,
    Step,
    ZoneMode,
)
from sequences.i18n import N_


class EnrollmentStatus(StrEnum):
    active = "active"
    needs_attention = "needs_attention"  # a step is held until someone fixes the cause
    replied = "replied"
    done = "done"
    stopped = "stopped"
    bounced = "bounced"


class StepFlag(BaseModel):
    """A step to edit: a recipient's server rejected its content."""

    step_id: uuid.UUID
    reason: str  # a BounceReason: spam-content, virus, message-too-big, content-rejected
    diagnostic: str
    flagged_at: datetime


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
    mailbox_pool: list[str] = []  # the connected mailboxes it sends from in rotation
    holidays: HolidayChoice = "workspace"
    zone_mode: ZoneMode = "sequence"
    on_account_reply: AccountReply = AccountReply()
    state: str  # live | paused | archived
    enrolled: int
    counts: dict[str, int]  # enrollees per status
    headline: str  # "N enrolled · live"
    created_at: datetime
    paused_reason: str | None = None  # why it paused itself (the bounce-rate guard)
    step_flags: list[StepFlag] = []  # steps a recipient's server rejected for their content



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
    timezone: str | None = None  # IANA name, when known
    opted_out: bool
    created_at: datetime
    updated_at: datetime
    # the entry of the suppression list that keeps sequences from mailing this contact (their
    # address, or its domain): on one contact's view only, not in lists
    suppressed: SuppressionView | None = None


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
    schedule_moved: list[ScheduleMove] = []  # why the window or holidays moved the next step
    schedule_zone: str | None = None  # the zone the next step goes out in
    attention: str | None  # why a step is held (needs_attention)
    # the same two in any language (contracts/texts.py; None where the event had none)
    schedule_note_text: Text | None = None
    attention_text: Text | None = None
    ended_reason: str | None  # why it stopped, bounced or replied
    ended_reason_text: Text | None = None  # the same in any language (our own reasons only)
    reply_intent: ReplyIntent | None = None  # what the reply wanted, when it replied
    # the next step waits until then (EnrollmentPaused), and why: out-of-office, account-reply
    paused_until: datetime | None = None
    pause_reason: str | None = None


class EnrollmentPage(BaseModel):
    items: list[EnrollmentView]
    next_cursor: str | None


class EnrolleeTable(BaseModel):
    sequence: SequenceView
    page: EnrollmentPage


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
    excluded_suppressed: int = 0  # their address or its domain is on the suppression list


# Why a contact was not enrolled: the `detail` of the 409 answer to `EnrollContact`, keyed as
# the counts of `BulkEnrollmentResult` (clients may tell refusals apart by these texts). In the
# catalogs (N_): the web app shows them in the reader's language.
ENROLLMENT_REFUSALS = {
    "skipped_active": N_("the contact is already active in this sequence"),
    "skipped_ended": N_("the contact's earlier enrollment in this sequence ended;"
                        " send reenroll: true to enroll again"),
    "excluded_opted_out": N_("the contact opted out"),
    "refused_bounced": N_("mail to this address bounced; change the contact's email first"),
    "excluded_suppressed": N_("the contact's address is on the suppression list"),
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
    text: Text | None = None  # the message in any language (contracts/texts.py)


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
    local: datetime  # in the zone it is sent in (`SchedulePreview.timezone`), with its offset
    utc: datetime
    due: datetime  # when it fell due (the wait done), before the window and holidays moved it
    moved: list[ScheduleMove] = []  # why it goes later than `due`


class SchedulePreview(BaseModel):
    sequence_id: uuid.UUID
    timezone: str  # the zone the steps are sent in: the contact's, or the sequence's
    start: datetime
    contact_id: uuid.UUID | None = None
    steps: list[ScheduledStep]


class WorkspaceCalendarView(BaseModel):
    holidays: HolidayCalendar | None
    skip_dates: list[SkipDate]
    send_window: SendWindow | None = None
    version: int = 0  # of the calendar's stream: send it back as `expected_version`


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


class MailboxDeliverabilityView(BaseModel):
    """The mailer's view of one sender mailbox: sender-side rejections (blocked, failed
    authentication, ...) since the window began, and whether its sends are paused."""

    address: str
    alert: bool  # sender-side rejections were seen in the window
    rejections: int  # in the last `window_minutes` (since it was last resumed)
    window_minutes: int
    pause_after: int  # rejections in the window that pause it
    last_rejection: str | None = None  # the last one's reason and diagnostic
    last_rejection_at: datetime | None = None
    paused: bool
    paused_at: datetime | None = None
    paused_reason: str | None = None


class SuppressionView(BaseModel):
    value: str  # an address or a domain
    kind: str  # address | domain
    reason: str  # bounced | manual | import
    note: str
    added_at: datetime


class SuppressionPage(BaseModel):
    items: list[SuppressionView]
    next_cursor: str | None


class SuppressionResult(BaseModel):
    """What adding entries (or a CSV file of them) did."""

    added: int
    already: int  # on the list before
    failed: list[RowError] = []


class ServerView(BaseModel):
    """An SMTP or IMAP server of a mailbox, without its secret."""

    host: str
    port: int
    security: str
    username: str
    has_password: bool


class ImapServerView(ServerView):
    folders: list[str]
    idle: bool


class MailboxToday(BaseModel):
    """Today's sends of a mailbox against its limits (the cap after the warm-up ramp)."""

    sent_today: int
    cap_today: int | None  # None: no daily limit
    sent_this_hour: int
    hourly_cap: int | None
    warming_up: bool


class MailboxView(BaseModel):
    """A workspace's sender mailbox. Secrets (passwords, tokens, client secrets) are never in
    it: only whether there is one."""

    mailbox_id: uuid.UUID
    address: str
    display_name: str
    owner_user_id: uuid.UUID | None
    auth: str  # password | oauth2
    oauth_provider: str | None
    oauth_connected: bool  # oauth2: a refresh token is stored (the consent was given)
    smtp: ServerView
    imap: ImapServerView | None
    limits: MailboxLimits
    connected_at: datetime
    healthy: bool
    # why not: the last failure seen when sending or testing (a revoked token, a refused login)
    problem: str | None = None
    checked_at: datetime | None = None
    today: MailboxToday
    # a pause for sender-side bounces (the mailbox pause of the bounce rules); None: not paused
    paused_reason: str | None = None


class ConnectionCheck(BaseModel):
    """One login attempt: `error` is the server's or the TLS layer's exact words."""

    ok: bool
    error: str | None = None
    detail: str | None = None  # e.g. the AUTH mechanism used, the folders opened


class ConnectionTestView(BaseModel):
    smtp: ConnectionCheck
    imap: ConnectionCheck | None  # None: the mailbox is not read over IMAP


class OAuthClientView(BaseModel):
    """A workspace's OAuth client at a provider, without its secret."""

    provider: str
    client_id: str
    authorize_url: str
    token_url: str
    scopes: list[str]
    has_secret: bool


class ConsentStartView(BaseModel):
    """Where to send the person who consents; `state` comes back with the provider's code."""

    authorize_url: str
    consent_id: uuid.UUID


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
    legacy_headers: bool = False  # also the deprecated `Sequences-*` headers
    # during a secret rotation: when the previous secret stops signing
    rotation_ends_at: datetime | None = None


class NewWebhook(WebhookView):
    # shown once, in the answer that registers it or rotates its secret: deliveries are signed
    # with it, Standard Webhooks (`webhook-signature: v1,<base64 HMAC-SHA256 of "id.t.body">`)
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


# --- analytics (services/enrollment/analytics.py) ----------------------------------------------

REPLY_INTENTS = ("interested", "not_now", "not_interested", "referral", "unsubscribe", "other")
ANALYTICS_METRICS = ("enrolled", "sent", "delivered", "bounced_hard", "bounced_soft",
                     "opened_human", "opened_machine", "clicked_human", "clicked_machine",
                     "replied", *(f"replied_{intent}" for intent in REPLY_INTENTS), "opted_out")
# rate: (numerator metrics, denominator metric, the formula in words)
RATE_FORMULAS = {
    "open_rate": (("opened_human",), "delivered", "unique human opens / delivered"),
    "click_rate": (("clicked_human",), "delivered", "unique human clicks / delivered"),
    "reply_rate": (("replied",), "delivered", "replies / delivered"),
    "bounce_rate": (("bounced_hard", "bounced_soft"), "sent",
                    "(hard + soft bounces) / sent"),
    "opt_out_rate": (("opted_out",), "delivered", "opt-outs / delivered"),
    "machine_open_share": (("opened_machine",), "delivered",
                           "unique machine opens / delivered (counted apart, not in open rate)"),
}


class Rate(BaseModel):
    value: float | None  # None: nothing to divide by (no email delivered in the range)
    formula: str


class AnalyticsCounts(BaseModel):
    counts: dict[str, int]  # every metric of ANALYTICS_METRICS, 0 when none
    rates: dict[str, Rate]  # every rate of RATE_FORMULAS


def analytics_counts(counts: Mapping[str, int]) -> AnalyticsCounts:
    """The counts, with every metric present, and their rates by RATE_FORMULAS."""
    full = {metric: int(counts.get(metric, 0)) for metric in ANALYTICS_METRICS}
    rates = {}
    for name, (numerators, denominator, formula) in RATE_FORMULAS.items():
        below = full[denominator]
        value = sum(full[n] for n in numerators) / below if below > 0 else None
        rates[name] = Rate(value=round(value, 4) if value is not None else None,
                           formula=formula)
    return AnalyticsCounts(counts=full, rates=rates)


class VariantAnalytics(AnalyticsCounts):
    variant: str  # "A", "B", "C"


class StepAnalytics(AnalyticsCounts):
    step_id: uuid.UUID
    position: int  # 1, 2, ... in the sequence's order now
    variants: list[VariantAnalytics] = []


class VariantWinnerView(BaseModel):
    """The A/B winner new sends use (the last `VariantWinnerChosen`)."""

    letter: str  # "A", "B", "C"
    by: str  # hand | automatic
    chosen_by: str = ""  # who, when by hand
    chosen_at: datetime


class SequenceAnalytics(BaseModel):
    """`GET /v1/sequences/{sequence_id}/analytics`: counts of a date range (UTC days, both
    ends included) for the sequence and each step, every open and click of a person's apart from
    a machine's (docs/machine-rules.md), and rates with their formula; the A/B winner, if one
    was chosen (by hand or by the automatic rule), whatever the range."""

    sequence_id: uuid.UUID
    since: date
    until: date
    totals: AnalyticsCounts
    steps: list[StepAnalytics]
    winner: VariantWinnerView | None = None
