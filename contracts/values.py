"""Value objects shared by commands, events and views, with the validation the brief asks for."""

from __future__ import annotations

import json
import re
import uuid
from datetime import date as date_
from enum import StrEnum
from typing import Annotated, Collection, Literal, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from email_validator.rfc_constants import (
    CASE_INSENSITIVE_MAILBOX_NAMES,
    DOT_ATOM_TEXT,
    EMAIL_MAX_LENGTH,
)
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic.networks import validate_email

from contracts.merge_fields import unknown_variables

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _single_line(value: str) -> str:
    """Refuse CR, LF and other control characters: these strings end up in mail headers."""
    if _CONTROL.search(value):
        raise ValueError("must be a single line without control characters (CR/LF refused)")
    return value


def _known_variables(value: str) -> str:
    unknown = unknown_variables(value)
    if unknown:
        first = unknown[0]
        raise ValueError(
            f"unknown merge variable {{{{{first.variable}}}}} at position {first.start}"
        )
    return value


def _timezone(value: str) -> str:
    # ZoneInfo also accepts file paths like "../../etc"; only real IANA names are wanted.
    if value not in _iana_names():
        raise ValueError(f"unknown timezone {value!r}: use an IANA name such as 'Asia/Seoul'")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown timezone {value!r}") from error
    return value


_IANA_NAMES: set[str] = set()


def _iana_names() -> set[str]:
    if not _IANA_NAMES:
        _IANA_NAMES.update(available_timezones())
    return _IANA_NAMES


SingleLine = Annotated[str, AfterValidator(_single_line)]
Template = Annotated[str, AfterValidator(_known_variables)]
HeaderTemplate = Annotated[str, AfterValidator(_single_line), AfterValidator(_known_variables)]
TimezoneName = Annotated[str, AfterValidator(_timezone)]
# a change of an optional zone: an IANA name, or "" to clear it
TimezoneChange = Annotated[str, AfterValidator(lambda value: value and _timezone(value))]
LocalTime = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", examples=["09:30"])]


Language = Annotated[
    Literal["ko", "en"],
    Field(description="What recipients read besides the steps (the email footer with its"
                      " unsubscribe link, the unsubscribe page): Korean or English."),
]
DEFAULT_LANGUAGE = "en"  # sequences created without a language, and events from before it


# --- email addresses -------------------------------------------------------------------------

# For an address of dot-atom ASCII before the @ (email_validator's own DOT_ATOM_TEXT) and ASCII
# letters, digits, dots and hyphens after it, email_validator's verdict and normalized value
# depend on the domain only: the local part is kept as written (unless it is one of the mailbox
# names it lowercases), the domain lowercased, and only the total length (254) is checked.
_PLAIN_DOMAIN = re.compile(r"[A-Za-z0-9.-]+")
_CASE_INSENSITIVE = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)
_known_domains: set[str] = set()  # accepted by email_validator, as written, and only lowercased
_KNOWN_DOMAINS_MAX = 100_000


class Email(EmailStr):
    """pydantic's `EmailStr` (same verdicts, same normalized value, same JSON schema), without
    validating the same domain again for every address: email_validator's domain checks (IDNA,
    UTS-46) took about 90 us an address, three times per imported contact (the gateway's row
    check, the enrollment service's command, the event), most of a 100,000-row import.

    An address of the plain shape above whose domain was already accepted is answered here
    (the local part unchanged, the domain lowercased, as email_validator does for them); every
    other address, and the first of each domain, goes through `EmailStr`'s own validation."""

    @classmethod
    def _validate(cls, value: str, /) -> str:
        local, _, domain = value.rpartition("@")
        plain = (len(value) <= EMAIL_MAX_LENGTH and DOT_ATOM_TEXT.match(local) is not None
                 and _PLAIN_DOMAIN.fullmatch(domain) is not None
                 and local.lower() not in _CASE_INSENSITIVE)
        if plain and domain in _known_domains:
            return f"{local}@{domain.lower()}"
        normalized = validate_email(value)[1]
        if plain and normalized == f"{local}@{domain.lower()}":
            if len(_known_domains) >= _KNOWN_DOMAINS_MAX:
                _known_domains.clear()
            _known_domains.add(domain)
        return normalized


class Channel(StrEnum):
    email = "email"
    sms = "sms"
    call = "call"


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _minutes(value: str) -> int:
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


class TimeBlock(BaseModel):
    """Local times `start` up to `end` (`end` itself is outside: 09:00-17:00 sends at 16:59,
    not at 17:00). 24:00 is refused: the last block of a day ends at 23:59 at the latest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: LocalTime
    end: LocalTime

    @model_validator(mode="after")
    def _ends_after_it_starts(self) -> TimeBlock:
        if _minutes(self.end) <= _minutes(self.start):
            raise ValueError(f"the block ends ({self.end}) before or when it starts ({self.start})")
        return self


def _distinct_days(days: list[str]) -> list[str]:
    return [day for day in WEEKDAYS if day in days]  # in week order, each once


def _no_overlaps(blocks: list[TimeBlock]) -> list[TimeBlock]:
    ordered = sorted(blocks, key=lambda b: _minutes(b.start))
    for before, after in zip(ordered, ordered[1:]):
        if _minutes(after.start) < _minutes(before.end):
            raise ValueError(f"blocks {before.start}-{before.end} and {after.start}-{after.end}"
                             " overlap")
    return ordered


class SendWindow(BaseModel):
    """When mail may go out: these days of the week, within these local time blocks (the same
    blocks on each of the days), e.g. Mon-Fri 09:00-11:30 and 14:00-17:00."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    days: Annotated[list[Weekday], Field(min_length=1, max_length=7),
                    AfterValidator(_distinct_days)]
    blocks: Annotated[list[TimeBlock], Field(min_length=1, max_length=12),
                      AfterValidator(_no_overlaps)]


class SendPolicy(BaseModel):
    """`send_time`: mail goes out at that local time on the due day; `as_soon_as_due`: at once;
    `window`: at once inside the send window, else when it next opens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["send_time", "as_soon_as_due", "window"]
    send_time: LocalTime | None = None
    window: SendWindow | None = Field(default=None, exclude_if=lambda value: value is None)

    @model_validator(mode="after")
    def _send_time_matches_mode(self) -> SendPolicy:
        if self.mode == "send_time" and self.send_time is None:
            raise ValueError("send_time (HH:MM) is required when mode is 'send_time'")
        if self.mode != "send_time" and self.send_time is not None:
            raise ValueError(f"send_time must be empty when mode is {self.mode!r}")
        if self.mode == "window" and self.window is None:
            raise ValueError("window (days and blocks) is required when mode is 'window'")
        if self.mode != "window" and self.window is not None:
            raise ValueError(f"window must be empty when mode is {self.mode!r}")
        return self


WaitUnit = Literal["days", "business_days"]
ZoneMode = Annotated[
    Literal["sequence", "contact"],
    Field(description="Whose local time the window, send time, waits and holidays are read in:"
                      " the sequence's zone, or each contact's (the sequence's when the contact"
                      " has none)."),
]


def _holiday_country(value: str) -> str:
    from holidays import list_supported_countries  # imported once, when first needed

    if value not in list_supported_countries():
        raise ValueError(f"unknown holiday country {value!r}: use an ISO 3166 code such as 'KR'")
    return value


class HolidayCalendar(BaseModel):
    """A public-holiday calendar of the `holidays` package: a country (ISO 3166-1 alpha-2, e.g.
    KR, US, JP, DE) and optionally one of its subdivisions (e.g. US-CA is `US` + `CA`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    country: Annotated[str, Field(min_length=2, max_length=3), AfterValidator(_holiday_country)]
    subdivision: Annotated[str, Field(min_length=1, max_length=10)] | None = None

    @model_validator(mode="after")
    def _known_subdivision(self) -> HolidayCalendar:
        from holidays import list_supported_countries

        known = list_supported_countries()[self.country]
        if self.subdivision is not None and self.subdivision not in known:
            shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
            raise ValueError(f"unknown subdivision {self.subdivision!r} of {self.country}"
                             + (f": one of {shown}" if known else ": it has none"))
        return self


def _one_holiday_error(value, handler):
    """One message for the field, not one per member of the union."""
    try:
        return handler(value)
    except ValidationError as error:
        if isinstance(value, str):
            raise ValueError("must be 'workspace', 'none' or a calendar such as"
                             ' {"country": "KR"}') from None
        found = next((e for e in error.errors() if e["type"] != "literal_error"), error.errors()[0])
        where = [str(p) for p in found["loc"] if p in HolidayCalendar.model_fields]
        raise ValueError((f"{where[-1]}: " if where else "")
                         + found["msg"].removeprefix("Value error, ")) from None


# "workspace": the workspace's default calendar (if it names one); "none": no public holidays
HolidayChoice = Annotated[HolidayCalendar | Literal["workspace", "none"],
                          WrapValidator(_one_holiday_error)]


class SkipDate(BaseModel):
    """A day the workspace sends nothing (a company offsite), in every sequence's local time."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    date: date_
    name: Annotated[SingleLine, Field(max_length=100)] = ""


class ScheduleMove(BaseModel):
    """Why a step's moment moved past its due moment (one entry per reason, in order)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["not_sending_day", "holiday", "skip_date", "after_window", "before_window"]
    date: date_  # the local date it is about
    name: str = ""  # the holiday's or skip date's name
    at: str = ""  # HH:MM: the end of the last block passed, or when the window opens


class Variant(BaseModel):
    """One A/B variant of an email step (its letter is its place: A, B, C)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subject: Annotated[HeaderTemplate, Field(min_length=1, max_length=998)] | None = None
    body: Annotated[Template, Field(min_length=1, max_length=100_000)]
    weight: int = Field(ge=1, le=100, description="Share of enrollments, in percent: the"
                        " weights of a step's variants add up to 100")


class Step(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Steps keep their id across edits, so enrollments know which steps they already ran.
    # Send the id of an existing step to keep it when changing a sequence's steps.
    step_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    channel: Channel
    subject: Annotated[HeaderTemplate, Field(min_length=1, max_length=998)] | None = None
    body: Annotated[Template, Field(min_length=1, max_length=100_000)]
    wait_days: int = Field(ge=0, le=365, description="Days after the previous step (or enrollment)")
    wait_unit: WaitUnit = Field(default="days", description="`days`: calendar days;"
                                " `business_days`: days the window sends on, holidays skipped")
    # A/B: none, or 2 or 3 (A, B, C). An enrollment keeps one letter for every step that has
    # variants (sequences/variants.py); `subject` and `body` above go to enrollments that
    # reached the step without a letter (none: every step with variants has them).
    variants: Annotated[list[Variant], Field(max_length=3)] = []

    @field_validator("variants")
    @classmethod
    def _variants(cls, variants: list[Variant], info: ValidationInfo) -> list[Variant]:
        if not variants:
            return variants
        if info.data.get("channel") != Channel.email:
            raise ValueError("only email steps take variants")
        if len(variants) < 2:
            raise ValueError("a step has no variants or 2 to 3 of them")
        if sum(v.weight for v in variants) != 100:
            raise ValueError("the weights of the variants must add up to 100")
        if info.data.get("subject") is not None:
            missing = [letter for letter, v in zip("ABC", variants) if v.subject is None]
            if missing:
                raise ValueError(f"variant {', '.join(missing)} needs a subject (the step"
                                 " starts a thread)")
        return variants

    @model_validator(mode="after")
    def _subject_only_on_email(self) -> Step:
        if self.subject is not None and self.channel != Channel.email:
            raise ValueError("only email steps take a subject")
        return self


def check_steps(steps: Sequence[Step]) -> Sequence[Step]:
    """Rules on the list as a whole: unique ids; the first email step starts the thread."""
    if len({s.step_id for s in steps}) != len(steps):
        raise ValueError("steps: step_id values must be unique")
    first_email = next((s for s in steps if s.channel == Channel.email), None)
    if first_email is not None and first_email.subject is None:
        raise ValueError("steps: the first email step needs a subject (it starts the thread)")
    return steps


def next_step(steps: Sequence[Step], completed: Collection[uuid.UUID]) -> Step | None:
    """The step an enrollment runs next, given the ids of the steps it completed.

    It is the first not-yet-completed step after the last completed one still in the sequence:
    a deleted step that enrollees were waiting on passes them to the following one, and a step
    inserted before where they are is not run. None when nothing is left (the enrollment is done).
    """
    last = max((i for i, step in enumerate(steps) if step.step_id in completed), default=-1)
    return next((step for step in steps[last + 1 :] if step.step_id not in completed), None)


Steps = Annotated[list[Step], Field(min_length=1, max_length=50), AfterValidator(check_steps)]


def steps_json(steps: Sequence[Step]) -> str:
    """The steps as stored in read models (a jsonb column)."""
    return json.dumps([step.model_dump(mode="json") for step in steps])


def _labels(values: list[str]) -> list[str]:
    """Tags and lists: trimmed, without blanks or repeats, in the order given."""
    seen: dict[str, None] = {}
    for value in values:
        if value.strip():
            seen.setdefault(value.strip(), None)
    return list(seen)


Label = Annotated[SingleLine, Field(max_length=100)]
Labels = Annotated[list[Label], Field(max_length=50), AfterValidator(_labels)]
ShortText = Annotated[SingleLine, Field(max_length=200)]
Phone = Annotated[SingleLine, Field(max_length=40)]


# --- bounces: why a message came back (RFC 3463 enhanced code and the diagnostic text) -----------
# The class decides what happens: only recipient-permanent blames the address (suppressed);
# recipient-temporary counts as soft; sender-side holds the enrollment and alerts the mailbox;
# content-side holds the enrollment and flags the step. "unknown" is left for events written
# before the classes existed (their `kind` decides, as it did then).
BounceClass = Literal[
    "recipient-permanent", "recipient-temporary", "sender-side", "content-side", "unknown",
]
BounceReason = Literal[
    # recipient-permanent
    "user-unknown", "host-unknown", "moved", "not-accepted",
    # recipient-temporary
    "mailbox-full", "mailbox-suspended", "expired-in-queue", "system-full", "over-quota",
    # sender-side
    "sender-auth", "sender-blocked", "sender-policy", "ptr-required", "relay-denied",
    "rate-limited", "tls-required",
    # content-side
    "spam-content", "virus", "message-too-big", "content-rejected",
    # nothing decided it
    "unclassified",
]


# --- replies: what the contact's answer wants (sequences/reply_intent.py decides it) ---------
# "unsubscribe" opts the contact out as the link does; "other" is also what replies recorded
# before intents existed read as.
ReplyIntent = Literal["interested", "not_now", "not_interested", "referral", "unsubscribe",
                      "other"]

# --- the suppression list: addresses and whole domains nobody in the workspace mails ----------

_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$")
_SUPPRESSION_NAMESPACE = uuid.UUID("a4f1c6de-2b7e-4d59-8c0e-5f3b9e21d7a4")


def suppression_target(value: str) -> tuple[Literal["address", "domain"], str]:
    """An address (validated as contacts' are) or a bare domain (`example.com`, also written
    `@example.com`), lowercased: what the list compares an email's address and domain with."""
    value = value.strip().lower()
    if "@" in value.lstrip("@"):
        return "address", str(Email._validate(value)).lower()
    domain = value.lstrip("@").rstrip(".")
    if not _DOMAIN.match(domain):
        raise ValueError("must be an email address or a domain such as example.com")
    return "domain", domain


def _suppression_value(value: str) -> str:
    return suppression_target(value)[1]


SuppressionValue = Annotated[str, Field(min_length=3, max_length=254),
                             AfterValidator(_suppression_value)]


def suppression_id_for(workspace_id: uuid.UUID, value: str) -> uuid.UUID:
    """One stream per (workspace, address or domain): adding it twice finds the same stream."""
    return uuid.uuid5(_SUPPRESSION_NAMESPACE, f"{workspace_id}:{value}")


def suppressed_by(email: str) -> tuple[str, str]:
    """The two list values that suppress an email: its address and its domain."""
    address = email.lower()
    return address, address.rpartition("@")[2]


# --- mailboxes: how a workspace's sender mailbox is reached, and how much it may send ---------
# "none" (no TLS at all) is for loopback servers and tests; real providers want one of the others.
MailSecurity = Literal["starttls", "tls", "none"]
MailboxAuth = Literal["password", "oauth2"]
OAuthProvider = Literal["google", "microsoft"]
MailboxPool = Annotated[list[Email], Field(max_length=20)]


def pool_addresses(pool: Sequence[str]) -> list[str]:
    """A pool as it is stored and compared: lower-case addresses."""
    return [str(address).lower() for address in pool]


class MailboxLimits(BaseModel):
    """What one mailbox may send. The day is the sending sequence's day; what exceeds a limit
    waits (the enrollment shows until when and why), it is never dropped. The warm-up ramp
    starts at `warmup_start` a day on the day the mailbox was connected and adds `warmup_step`
    a day, up to `daily_cap`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    daily_cap: Annotated[int, Field(ge=1, le=100_000)] | None = None
    hourly_cap: Annotated[int, Field(ge=1, le=10_000)] | None = None
    min_gap_seconds: Annotated[int, Field(ge=0, le=86_400)] = 0
    jitter_seconds: Annotated[int, Field(ge=0, le=3_600)] = 0  # random extra on each gap
    warmup_start: Annotated[int, Field(ge=1, le=100_000)] | None = None
    warmup_step: Annotated[int, Field(ge=0, le=100_000)] = 0

    @model_validator(mode="after")
    def _ramp_below_cap(self) -> MailboxLimits:
        if self.warmup_start and self.daily_cap and self.warmup_start > self.daily_cap:
            raise ValueError("warmup_start: at most daily_cap")
        return self


class Tracking(BaseModel):
    """What a sequence's emails track: `opens` (a pixel), `clicks` (links pointed at signed
    redirects on the gateway). Both on unless switched off."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    opens: bool = True
    clicks: bool = True


class AccountReply(BaseModel):
    """What a reply from a colleague does to this sequence's enrollments: someone at the same
    company (sequences/accounts.py: the company field when both have one, else the email domain,
    never a free-mail one) replied in any sequence of the workspace. `stop` (the default),
    `pause` for `pause_days`, or `continue`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Literal["stop", "pause", "continue"] = "stop"
    pause_days: Annotated[int, Field(ge=1, le=90)] = 14


class TrackedRequest(BaseModel):
    """What the gateway saw of a request for a tracking pixel or redirect: the facts the rules
    of sequences/machine_rules.py decide by (the address is not kept in any event)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["GET", "HEAD"] = "GET"
    user_agent: Annotated[str, Field(max_length=1000)] = ""
    client_ip: Annotated[str, Field(max_length=64)] = ""
