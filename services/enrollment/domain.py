"""The enrollment service's aggregates, as pure functions: `evolve` (state from events) and
decisions (events from state and a request). No I/O here: handlers load a stream, ask the
domain, and append what it decides."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from enum import StrEnum
from datetime import datetime
from functools import reduce
from typing import Iterable, Sequence as Seq

from contracts.base import Event
from contracts.events import (
    ContactCreated,
    ContactDeleted,
    ContactEnrolled,
    ContactOptedOut,
    ContactUpdated,
    EnrollmentBounced,
    EnrollmentCompleted,
    EnrollmentReplied,
    EnrollmentNeedsAttention,
    EnrollmentRetried,
    EnrollmentStepCompleted,
    EnrollmentStopped,
    SequenceArchived,
    SequenceCreated,
    SequencePaused,
    SequenceResumed,
    SequenceStepsChanged,
)
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


def evolve_sequence(state: Sequence | None, event: Event) -> Sequence:
    match event:
        case SequenceCreated():
            return Sequence(event.sequence_id, "live", tuple(event.steps), 1)
    assert state is not None
    state = replace(state, version=state.version + 1)
    match event:
        case SequenceStepsChanged():
            return replace(state, steps=tuple(event.steps))
        case SequencePaused():
            return replace(state, state="paused")
        case SequenceResumed():
            return replace(state, state="live")
        case SequenceArchived():
            return replace(state, state="archived")
    raise TypeError(f"not a sequence event: {type(event).__name__}")


def pause(state: Sequence, at: datetime) -> list[Event]:
    if state.state == "paused":
        return []
    _require_not_archived(state)
    return [SequencePaused(sequence_id=state.sequence_id, paused_at=at)]


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
            )
        case EnrollmentCompleted() | EnrollmentReplied() | EnrollmentBounced() | EnrollmentStopped():
            return replace(state, status=_ENDS_AS[type(event)], held_step=None)
        case EnrollmentNeedsAttention():
            return replace(state, status=EnrollmentStatus.needs_attention, held_step=event.step_id)
        case EnrollmentRetried():
            return replace(state, status=EnrollmentStatus.active, held_step=None)
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


def hold(state: Enrollment, step_id: uuid.UUID, reason: str) -> list[Event]:
    """A step could not go out: the enrollment waits for someone to fix the cause."""
    if state.status != EnrollmentStatus.active or step_id in state.completed:
        return []
    return [EnrollmentNeedsAttention(enrollment_id=state.enrollment_id, step_id=step_id,
                                     reason=reason)]


def retry(state: Enrollment, at: datetime) -> list[Event]:
    if state.status != EnrollmentStatus.needs_attention or state.held_step is None:
        raise Refused("nothing to retry: the enrollment is not waiting on a held step",
                      "enrollment_id")
    return [EnrollmentRetried(enrollment_id=state.enrollment_id, step_id=state.held_step,
                              retried_at=at)]


# --- contacts ----------------------------------------------------------------------------------

CONTACT_FIELDS = ("name", "company", "job_title", "owner_name", "email", "phone", "status",
                  "tags", "lists")


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


def update_contact(state: Contact, changes: dict) -> list[Event]:
    """Only what really changes is recorded (an import of the same file changes nothing)."""
    if state.deleted:
        raise Refused("the contact was deleted", "contact_id")
    changed = {k: v for k, v in changes.items() if v is not None and state.fields.get(k) != v}
    return [ContactUpdated(contact_id=state.contact_id, changes=changed)] if changed else []


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


def admission(
    opted_out: bool,
    email: str,
    last_status: str | None,
    last_email: str | None,
    reenroll: bool,
) -> Admission:
    """Whether a contact can be enrolled in a sequence, given its last enrollment there (if any).

    Opted-out contacts never are; an active enrollment is never doubled; an ended one is
    followed by a new one only when asked (`reenroll`), and not when it bounced on an address
    that has not changed since.
    """
    if opted_out:
        return Admission.excluded_opted_out
    if last_status is None:
        return Admission.enroll
    if last_status == EnrollmentStatus.active:
        return Admission.skipped_active
    if not reenroll:
        return Admission.skipped_ended
    if last_status == EnrollmentStatus.bounced and (last_email or "").lower() == email.lower():
        return Admission.refused_bounced
    return Admission.enroll
