"""The enrollment service's aggregates, as pure functions: `evolve` (state from events) and
decisions (events from state and a request). No I/O here: handlers load a stream, ask the
domain, and append what it decides."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from enum import StrEnum
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo
from functools import reduce
from typing import Iterable, Sequence as Seq

import pydantic_core

from contracts.base import Event
from contracts.events import (
    EnrollmentPaused,
    EnrollmentResumed,
    AddressSuppressed,
    ContactCreated,
    ContactDeleted,
    ContactEnrolled,
    ContactOptedOut,
    ContactsImported,
    ContactUpdated,
    EnrollmentBounced,
    EnrollmentCompleted,
    EnrollmentContactZoneChanged,
    EnrollmentReplied,
    EnrollmentNeedsAttention,
    EnrollmentRetried,
    EnrollmentStepCompleted,
    EnrollmentStopped,
    SequenceArchived,
    SequenceCreated,
    SequencePaused,
    SequenceResumed,
    SequenceSettingsChanged,
    SequenceStepFlagged,
    SequenceStepsChanged,
    SuppressionRemoved,
    WorkspaceCalendarChanged,
)
from contracts.commands import SequenceSettings
from contracts.texts import Text
from contracts.values import HolidayCalendar
from sequences.calendars import NoSendingDay, calendar_for, first_sending_day
from contracts.values import Channel, Step, next_step
from contracts.views import EnrollmentStatus


class Refused(Exception):
    """A request the current state does not allow (answered as 409 Conflict)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


# --- sequences ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sequence:
    sequence_id: uuid.UUID
    state: str  # live | paused | archived
    steps: tuple[Step, ...]
    version: int
    settings: SequenceSettings | None = None


def evolve_sequence(state: Sequence | None, event: Event) -> Sequence:
    match event:
        case SequenceCreated():
            settings = SequenceSettings.model_validate(
                event.model_dump(include=set(SequenceSettings.model_fields)))
            return Sequence(event.sequence_id, "live", tuple(event.steps), 1, settings)
    assert state is not None
    state = replace(state, version=state.version + 1)
    match event:
        case SequenceStepsChanged():
            return replace(state, steps=tuple(event.steps))
        case SequenceSettingsChanged():
            return replace(state, settings=event.settings)
        case SequencePaused():
            return replace(state, state="paused")
        case SequenceResumed():
            return replace(state, state="live")
        case SequenceArchived():
            return replace(state, state="archived")
        case SequenceStepFlagged():
            return state
    raise TypeError(f"not a sequence event: {type(event).__name__}")


def pause(state: Sequence, at: datetime, reason: str | None = None) -> list[Event]:
    if state.state == "paused":
        return []
    _require_not_archived(state)
    return [SequencePaused(sequence_id=state.sequence_id, paused_at=at, reason=reason)]


def guard_bounce_rate(state: Sequence, at: datetime, bounced: int, deliveries: int,
                      limit: float, minimum: int) -> list[Event]:
    """The bounce-rate guard: a live sequence whose recipient-permanent bounces are more than
    `limit` of its deliveries (at least `minimum` of them) in the window pauses itself, saying
    why. Resuming it is a person's decision (the usual resume)."""
    if state.state != "live" or deliveries < minimum or bounced <= limit * deliveries:
        return []
    why = (f"paused by the bounce-rate guard: {bounced} of {deliveries} deliveries in the last"
           f" 24 hours bounced as bad addresses ({bounced / deliveries:.1%}, limit {limit:.0%})")
    return pause(state, at, why)


def resume(state: Sequence, at: datetime) -> list[Event]:
    if state.state == "live":
        return []
    _require_not_archived(state)
    return [SequenceResumed(sequence_id=state.sequence_id, resumed_at=at)]


def archive(state: Sequence, at: datetime) -> list[Event]:
    if state.state == "archived":
        return []
    return [SequenceArchived(sequence_id=state.sequence_id, archived_at=at)]


def change_steps(state: Sequence, steps: Seq[Step]) -> list[Event]:
    _require_not_archived(state)
    if tuple(steps) == state.steps:
        return []
    return [SequenceStepsChanged(sequence_id=state.sequence_id, steps=list(steps))]


def change_settings(state: Sequence, changes: dict, workspace: WorkspaceCalendarChanged | None,
                    today: date) -> list[Event]:
    """The settings named in `changes` (absent or None: unchanged); only what really changes is
    recorded, and a calendar left with no sending day is refused."""
    _require_not_archived(state)
    current = state.settings.model_dump()
    wanted = {**current, **{k: v for k, v in changes.items() if v is not None}}
    settings = SequenceSettings.model_validate(wanted)
    after = settings.model_dump()
    changed = [name for name in SequenceSettings.model_fields if after[name] != current[name]]
    if not changed:
        return []
    require_sending_days(settings, workspace, today)
    return [SequenceSettingsChanged(sequence_id=state.sequence_id, settings=settings,
                                    changed=changed)]


def require_sending_days(settings, workspace: WorkspaceCalendarChanged | None, today: date) -> None:
    """Refuse settings whose window, holidays and the workspace's skip dates leave no sending
    day in the next 366 days, naming the field at fault."""
    holidays = settings.holidays
    if holidays == "workspace":
        holidays = workspace.holidays if workspace else None
    calendar = calendar_for(settings.timezone, settings.send_policy,
                            holidays if isinstance(holidays, HolidayCalendar) else None,
                            workspace.skip_dates if workspace else [])
    try:
        first_sending_day(calendar, today)
    except NoSendingDay as error:
        field = "holidays" if isinstance(holidays, HolidayCalendar) else "send_policy.window"
        raise Unsendable(f"{error}: the send window, holidays and skip dates leave no day to"
                         " send on", field) from None


class Unsendable(Refused):
    """Settings that leave no sending day (answered as 422, naming the field)."""


def workspace_calendar(state: WorkspaceCalendarChanged | None,
                       event: Event) -> WorkspaceCalendarChanged:
    assert isinstance(event, WorkspaceCalendarChanged)
    return event  # every event is the whole calendar


def require_live(state: Sequence) -> None:
    if state.state != "live":
        raise Refused(f"the sequence is {state.state}: only a live sequence takes enrollments",
                      "sequence_id")


def _require_not_archived(state: Sequence) -> None:
    if state.state == "archived":
        raise Refused("the sequence is archived", "sequence_id")


# --- enrollments -------------------------------------------------------------------------------

# Enrollment ids are derived from (sequence, contact, attempt): two racing requests to enroll the
# same contact compute the same stream id, and the event log lets only one of them create it.
_ENROLLMENT_NAMESPACE = uuid.UUID("6f1d8a52-3c1e-4f57-9a59-5b8f7c2e4d10")


def enrollment_id_for(sequence_id: uuid.UUID, contact_id: uuid.UUID, attempt: int = 1) -> uuid.UUID:
    return uuid.uuid5(_ENROLLMENT_NAMESPACE, f"{sequence_id}:{contact_id}:{attempt}")


@dataclass(frozen=True)
class Enrollment:
    enrollment_id: uuid.UUID
    sequence_id: uuid.UUID
    contact_id: uuid.UUID
    status: EnrollmentStatus
    completed: tuple[uuid.UUID, ...]  # ids of the steps done, in the order they were done
    sends: int
    version: int  # of the enrollment's stream
    held_step: uuid.UUID | None = None  # the step waiting for someone (needs attention)
    paused_until: datetime | None = None  # the next step waits until then (EnrollmentPaused)

    @property
    def is_open(self) -> bool:
        """Still going: active, or held until someone fixes a cause."""
        return self.status in (EnrollmentStatus.active, EnrollmentStatus.needs_attention)


_ENDS_AS = {
    EnrollmentCompleted: EnrollmentStatus.done,
    EnrollmentReplied: EnrollmentStatus.replied,
    EnrollmentBounced: EnrollmentStatus.bounced,
    EnrollmentStopped: EnrollmentStatus.stopped,
}


def evolve(state: Enrollment | None, event: Event) -> Enrollment:
    match event:
        case ContactEnrolled():
            return Enrollment(
                enrollment_id=event.enrollment_id,
                sequence_id=event.sequence_id,
                contact_id=event.contact_id,
                status=EnrollmentStatus.active,
                completed=(),
                sends=0,
                version=1,
            )
    assert state is not None
    state = replace(state, version=state.version + 1)
    match event:
        case EnrollmentStepCompleted():
            return replace(
                state,
                completed=(*state.completed, event.step_id),
                sends=state.sends + (event.channel == Channel.email),
                paused_until=None,  # a step went out: whatever paused it is over
            )
        case EnrollmentCompleted() | EnrollmentReplied() | EnrollmentBounced() | EnrollmentStopped():
            return replace(state, status=_ENDS_AS[type(event)], held_step=None)
        case EnrollmentNeedsAttention():
            return replace(state, status=EnrollmentStatus.needs_attention, held_step=event.step_id)
        case EnrollmentRetried():
            return replace(state, status=EnrollmentStatus.active, held_step=None)
        case EnrollmentContactZoneChanged():
            return state
        case EnrollmentPaused():
            return replace(state, paused_until=event.until)
        case EnrollmentResumed():
            return replace(state, paused_until=None)
    raise TypeError(f"not an enrollment event: {type(event).__name__}")


def replay(events: Iterable[Event], evolve=evolve):
    return reduce(evolve, events, None)


def complete_step(
    state: Enrollment,
    step: Step,
    step_index: int,
    at: datetime,
    steps: Seq[Step],
    message_id: str | None = None,
) -> list[Event]:
    """Record that a step is done; when no step is left the enrollment is done too.

    Nothing happens for an enrollment that is no longer active (it replied, was stopped, ...) or
    for a step it already recorded: redeliveries decide nothing twice.
    """
    if state.status != EnrollmentStatus.active or step.step_id in state.completed:
        return []
    events: list[Event] = [
        EnrollmentStepCompleted(
            enrollment_id=state.enrollment_id,
            step_id=step.step_id,
            step_index=step_index,
            channel=step.channel,
            completed_at=at,
            message_id=message_id,
        )
    ]
    if next_step(steps, {*state.completed, step.step_id}) is None:
        events.append(EnrollmentCompleted(enrollment_id=state.enrollment_id, completed_at=at))
    return events


def complete_if_nothing_left(state: Enrollment, steps: Seq[Step], at: datetime) -> list[Event]:
    """After an edit removed every step an enrollee had left, the enrollment is done."""
    if state.status != EnrollmentStatus.active or next_step(steps, state.completed) is not None:
        return []
    return [EnrollmentCompleted(enrollment_id=state.enrollment_id, completed_at=at)]


def end(state: Enrollment, ending: Event) -> list[Event]:
    """Reply, bounce or stop: ends an open enrollment; an ended one stays as it ended (the first
    ending wins, and a repeated one decides nothing)."""
    return [ending] if state.is_open else []


# --- pauses: out of office ----------------------------------------------------------------------

# no return date in an out-of-office answer (or none usable): the next step waits this long
OUT_OF_OFFICE_DEFAULT = timedelta(days=7)


def out_of_office_until(received_at: datetime, back_on: date | None, zone: str,
                        extra_days: int) -> tuple[datetime, str]:
    """Until when an out-of-office answer pauses the next step: the start of the day
    `extra_days` after the return date in the sequence's zone (the scheduler then plans the
    first send moment of a sending day from there), else 7 days from the answer; and why."""
    if back_on is None:
        return received_at + OUT_OF_OFFICE_DEFAULT, "no return date found: 7 days"
    day = back_on + timedelta(days=extra_days)
    until = datetime.combine(day, time(0), ZoneInfo(zone))
    return max(until, received_at), (f"back on {back_on.isoformat()}, plus {extra_days}"
                                      f" day{'s' if extra_days != 1 else ''}")


def pause_enrollment(state: Enrollment, event: EnrollmentPaused) -> list[Event]:
    """Only an active enrollment pauses; a later `until` than the one it has wins."""
    if state.status != EnrollmentStatus.active:
        return []
    if state.paused_until is not None and state.paused_until >= event.until:
        return []
    return [event]


def resume_enrollment(state: Enrollment, at: datetime, by: str) -> list[Event]:
    if state.paused_until is None or not state.is_open:
        raise Refused("the enrollment is not paused", "enrollment_id")
    return [EnrollmentResumed(enrollment_id=state.enrollment_id, resumed_at=at, by=by)]


def hold(state: Enrollment, step_id: uuid.UUID, reason: Text | str) -> list[Event]:
    """A step could not go out: the enrollment waits for someone to fix the cause. A plain
    English `reason` (a bounce's hold) is shown translated by the web app's sentence table."""
    if state.status != EnrollmentStatus.active or step_id in state.completed:
        return []
    text = reason if isinstance(reason, Text) else None
    return [EnrollmentNeedsAttention(enrollment_id=state.enrollment_id, step_id=step_id,
                                     reason=text.english() if text else reason,
                                     reason_text=text)]


def retry(state: Enrollment, at: datetime) -> list[Event]:
    if state.status != EnrollmentStatus.needs_attention or state.held_step is None:
        raise Refused("nothing to retry: the enrollment is not waiting on a held step",
                      "enrollment_id")
    return [EnrollmentRetried(enrollment_id=state.enrollment_id, step_id=state.held_step,
                              retried_at=at)]


# --- bounces: what each class of bounce does ---------------------------------------------------


class BounceAction(StrEnum):
    bounce = "bounce"  # the enrollment is Bounced (and a recipient-permanent address suppressed)
    soft = "soft"  # counted against the soft-bounce limit
    hold_sender = "hold-sender"  # held; the address is not blamed; the mailbox is alerted
    hold_content = "hold-content"  # held; the step is flagged for editing


_ACTIONS = {
    "recipient-permanent": BounceAction.bounce,
    "recipient-temporary": BounceAction.soft,
    "sender-side": BounceAction.hold_sender,
    "content-side": BounceAction.hold_content,
}


def bounce_action(bounce_class: str, kind: str) -> BounceAction:
    """By class; a bounce without one (events from before the classes) by its kind, as then."""
    if bounce_class in _ACTIONS:
        return _ACTIONS[bounce_class]
    return BounceAction.bounce if kind == "hard" else BounceAction.soft


def bounce_hold_reason(action: BounceAction, reason: str, words: str) -> str:
    """Why a sender-side or content-side bounce holds the enrollment (the web app shows these
    sentences in the reader's language: `Texts.said`)."""
    what = ("rejected by the recipient's server for its content: edit the step"
            if action is BounceAction.hold_content else
            "rejected for a sender-side reason (the address is not blamed): check the sender"
            " mailbox, then retry")
    return f"{what} ({reason}; {words[:200]})"


def counts_as_soft(bounce: dict) -> bool:
    """Which earlier bounces of an enrollment count against the soft-bounce limit."""
    return bounce_action(bounce.get("bounce_class", "unknown"),
                         bounce.get("kind", "")) is BounceAction.soft


# --- the suppression list ----------------------------------------------------------------------


def suppression_active(events: Iterable[Event]) -> bool:
    """On the list now: added, and not removed since."""
    active = False
    for event in events:
        active = isinstance(event, AddressSuppressed)
    return active


def suppress(active: bool, event: AddressSuppressed) -> list[Event]:
    return [] if active else [event]


def unsuppress(active: bool, event: SuppressionRemoved) -> list[Event]:
    if not active:
        raise Refused(f"{event.value} is not on the suppression list", "value")
    return [event]


# --- contacts ----------------------------------------------------------------------------------

CONTACT_FIELDS = ("name", "company", "job_title", "owner_name", "email", "phone", "status",
                  "tags", "lists", "timezone")


@dataclass(frozen=True)
class Contact:
    contact_id: uuid.UUID
    fields: dict
    opted_out: bool
    deleted: bool
    version: int


def evolve_contact(state: Contact | None, event: Event) -> Contact:
    match event:
        case ContactCreated():
            fields = event.model_dump(include=set(CONTACT_FIELDS))
            fields["timezone"] = fields["timezone"] or ""  # as an update that clears it says
            return Contact(event.contact_id, fields, False, False, 1)
    assert state is not None
    state = replace(state, version=state.version + 1)
    match event:
        case ContactUpdated():
            return replace(state, fields={**state.fields, **event.changes})
        case ContactOptedOut():
            return replace(state, opted_out=True)
        case ContactDeleted():
            return replace(state, deleted=True)
    raise TypeError(f"not a contact event: {type(event).__name__}")


def imported_contact(row: dict) -> Contact:
    """A contact an import created, from its row of the import's `ContactsImported` (as
    stored): what `evolve_contact` makes of the `ContactCreated` it stands for, at version 0:
    the creation is not in the contact's own stream, whose later events count from 1. (The
    row was validated when it was written: a repeated import reads thousands.)"""
    fields = {name: row[name] for name in CONTACT_FIELDS}
    fields["timezone"] = fields["timezone"] or ""  # as an update that clears it says
    return Contact(uuid.UUID(row["contact_id"]), fields, False, False, 0)


def replay_contact(events: Iterable[Event], imported: Contact | None = None) -> Contact | None:
    """A contact's state from the events of its stream; for a contact an import created,
    after its `imported_contact` state."""
    return reduce(evolve_contact, events, imported)


# What one `ContactsImported` holds at most, as JSON: its message must stay well under NATS's
# 1 MiB payload limit (2,000 rows of the usual few fields are about 400 KB; long tags and lists
# make a chunk's rows several events).
IMPORTED_BYTES = 512 * 1024


def import_contacts(rows: Seq[dict], known: dict[str, Contact], new_id
                    ) -> tuple[list[Event], list[tuple[Contact, list[Event]]], dict[str, int]]:
    """An import's chunk, upserted by email (`rows`: each row's fields as given; `known`: the
    workspace's contacts with these emails, by lowercased email). New addresses are created
    together, in `ContactsImported` events (one append for the chunk, not one a contact);
    known ones get the changes their row makes (only the fields the row has: an empty or
    missing cell erases nothing). A later row of an address new in this chunk changes the
    earlier one's fields. Returns the creations, the updates (state, events) and the counts."""
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    new: dict[str, dict] = {}
    updates = []
    for row in rows:
        email = row["email"].lower()
        if (pending := new.get(email)) is not None:
            changed = {k: v for k, v in row.items() if v is not None and pending.get(k) != v}
            pending.update(changed)
            counts["updated" if changed else "unchanged"] += 1
        elif (state := known.get(email)) is None:
            new[email] = {"contact_id": new_id(), **row}
            counts["created"] += 1
        else:
            events = update_contact(state, row)
            updates.append((state, events))
            counts["updated" if events else "unchanged"] += 1
    return contacts_imported(list(new.values()), new_id), updates, counts


def contacts_imported(contacts: list[dict], new_id) -> list[ContactsImported]:
    """The new contacts of a chunk as few events as fit `IMPORTED_BYTES` each."""
    events, batch, size = [], [], 0
    for contact in contacts:
        row_size = len(pydantic_core.to_json(contact))
        if batch and size + row_size > IMPORTED_BYTES:
            events.append(ContactsImported(import_id=new_id(), contacts=batch))
            batch, size = [], 0
        batch.append(contact)
        size += row_size
    if batch:
        events.append(ContactsImported(import_id=new_id(), contacts=batch))
    return events


def update_contact(state: Contact, changes: dict) -> list[Event]:
    """Only what really changes is recorded (an import of the same file changes nothing)."""
    if state.deleted:
        raise Refused("the contact was deleted", "contact_id")
    changed = {k: v for k, v in changes.items() if v is not None and state.fields.get(k) != v}
    return [ContactUpdated(contact_id=state.contact_id, changes=changed)] if changed else []


def zone_changed(state: Enrollment, contact_timezone: str | None, at: datetime) -> list[Event]:
    """An active enrollee's contact has a new zone: its pending step is planned again in it."""
    if not state.is_open:
        return []
    return [EnrollmentContactZoneChanged(enrollment_id=state.enrollment_id,
                                         contact_timezone=contact_timezone, changed_at=at)]


def opt_out(state: Contact, at: datetime, source: str, reason: str | None) -> list[Event]:
    if state.opted_out:
        return []
    return [ContactOptedOut(contact_id=state.contact_id, opted_out_at=at, source=source,
                            reason=reason)]


def delete_contact(state: Contact, at: datetime) -> list[Event]:
    return [] if state.deleted else [ContactDeleted(contact_id=state.contact_id, deleted_at=at)]


# --- who may be enrolled -----------------------------------------------------------------------


class Admission(StrEnum):
    enroll = "enroll"
    skipped_active = "skipped_active"
    skipped_ended = "skipped_ended"
    excluded_opted_out = "excluded_opted_out"
    refused_bounced = "refused_bounced"
    excluded_suppressed = "excluded_suppressed"


def admission(
    opted_out: bool,
    email: str,
    last_status: str | None,
    last_email: str | None,
    reenroll: bool,
    suppressed: bool = False,
) -> Admission:
    """Whether a contact can be enrolled in a sequence, given its last enrollment there (if any).

    Opted-out contacts never are, nor those whose address (or its domain) is suppressed; an
    active enrollment is never doubled; an ended one is followed by a new one only when asked
    (`reenroll`), and not when it bounced on an address that has not changed since. The
    earlier answers keep their precedence (a bounced address asked again is still
    `refused_bounced`).
    """
    if opted_out:
        return Admission.excluded_opted_out
    if last_status is None:
        return Admission.excluded_suppressed if suppressed else Admission.enroll
    if last_status == EnrollmentStatus.active:
        return Admission.skipped_active
    if not reenroll:
        return Admission.skipped_ended
    if last_status == EnrollmentStatus.bounced and (last_email or "").lower() == email.lower():
        return Admission.refused_bounced
    return Admission.excluded_suppressed if suppressed else Admission.enroll
