"""The enrollment aggregate: pure `evolve` (state from events) and decisions (events from state).

No I/O here: handlers load the stream, ask the domain, and append what it decides.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from functools import reduce
from typing import Iterable

from contracts.events import (
    ContactEnrolled,
    EnrollmentBounced,
    EnrollmentCompleted,
    EnrollmentReplied,
    EnrollmentStepCompleted,
    EnrollmentStopped,
)
from contracts.base import Event
from contracts.values import Channel
from contracts.views import EnrollmentStatus

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
    next_step: int  # index of the step to run next; the step count once done
    sends: int
    version: int  # of the enrollment's stream


def evolve(state: Enrollment | None, event: Event) -> Enrollment:
    match event:
        case ContactEnrolled():
            return Enrollment(
                enrollment_id=event.enrollment_id,
                sequence_id=event.sequence_id,
                contact_id=event.contact_id,
                status=EnrollmentStatus.active,
                next_step=0,
                sends=0,
                version=1,
            )
        case EnrollmentStepCompleted():
            assert state is not None
            return replace(
                state,
                next_step=event.step_index + 1,
                sends=state.sends + (event.channel == Channel.email),
                version=state.version + 1,
            )
        case EnrollmentCompleted() | EnrollmentReplied() | EnrollmentBounced() | EnrollmentStopped():
            assert state is not None
            return replace(state, status=_ENDS_AS[type(event)], version=state.version + 1)
    raise TypeError(f"not an enrollment event: {type(event).__name__}")


_ENDS_AS = {
    EnrollmentCompleted: EnrollmentStatus.done,
    EnrollmentReplied: EnrollmentStatus.replied,
    EnrollmentBounced: EnrollmentStatus.bounced,
    EnrollmentStopped: EnrollmentStatus.stopped,
}


def replay(events: Iterable[Event]) -> Enrollment | None:
    return reduce(evolve, events, None)


def complete_step(
    state: Enrollment,
    step_index: int,
    channel: Channel,
    at: datetime,
    step_count: int,
    message_id: str | None = None,
) -> list[Event]:
    """Record that a step is done; the last step also completes the enrollment.

    Nothing happens for an enrollment that is no longer active (it replied, was stopped, ...) or
    for a step it already recorded: redeliveries decide nothing twice.
    """
    if state.status != EnrollmentStatus.active or step_index != state.next_step:
        return []
    events: list[Event] = [
        EnrollmentStepCompleted(
            enrollment_id=state.enrollment_id,
            step_index=step_index,
            channel=channel,
            completed_at=at,
            message_id=message_id,
        )
    ]
    if step_index + 1 >= step_count:
        events.append(EnrollmentCompleted(enrollment_id=state.enrollment_id, completed_at=at))
    return events


def end(state: Enrollment, ending: Event) -> list[Event]:
    """Reply, bounce or stop: ends an active enrollment; an ended one stays as it ended (the first
    ending wins, and a repeated one decides nothing)."""
    if state.status != EnrollmentStatus.active:
        return []
    return [ending]
