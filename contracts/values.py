"""Value objects shared by commands, events and views, with the validation the brief asks for."""

from __future__ import annotations

import json
import re
import uuid
from enum import StrEnum
from typing import Annotated, Collection, Literal, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from email_validator.rfc_constants import (
    CASE_INSENSITIVE_MAILBOX_NAMES,
    DOT_ATOM_TEXT,
    EMAIL_MAX_LENGTH,
)
from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, model_validator
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


class SendPolicy(BaseModel):
    """`send_time`: mail goes out at that local time on the due day; `as_soon_as_due`: at once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["send_time", "as_soon_as_due"]
    send_time: LocalTime | None = None

    @model_validator(mode="after")
    def _send_time_matches_mode(self) -> SendPolicy:
        if self.mode == "send_time" and self.send_time is None:
            raise ValueError("send_time (HH:MM) is required when mode is 'send_time'")
        if self.mode == "as_soon_as_due" and self.send_time is not None:
            raise ValueError("send_time must be empty when mode is 'as_soon_as_due'")
        return self


class Step(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Steps keep their id across edits, so enrollments know which steps they already ran.
    # Send the id of an existing step to keep it when changing a sequence's steps.
    step_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    channel: Channel
    subject: Annotated[HeaderTemplate, Field(min_length=1, max_length=998)] | None = None
    body: Annotated[Template, Field(min_length=1, max_length=100_000)]
    wait_days: int = Field(ge=0, le=365, description="Days after the previous step (or enrollment)")

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
