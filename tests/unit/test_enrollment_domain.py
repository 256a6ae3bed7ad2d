"""The enrollment aggregate: evolve and decide, without I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from contracts.events import ContactEnrolled, EnrollmentCompleted, EnrollmentStepCompleted
from contracts.values import Channel
from contracts.views import EnrollmentStatus
from services.enrollment.domain import complete_step, enrollment_id_for, evolve, replay

NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)


def enrolled():
    sequence_id, contact_id = uuid.uuid4(), uuid.uuid4()
    return replay([ContactEnrolled(enrollment_id=enrollment_id_for(sequence_id, contact_id),
                                   sequence_id=sequence_id, contact_id=contact_id, enrolled_at=NOW)])


def test_the_same_contact_and_sequence_always_map_to_the_same_enrollment_stream():
    s, c = uuid.uuid4(), uuid.uuid4()
    assert enrollment_id_for(s, c) == enrollment_id_for(s, c) != enrollment_id_for(s, c, attempt=2)


def test_completing_a_middle_step_moves_to_the_next():
    state = enrolled()
    events = complete_step(state, 0, Channel.email, NOW, step_count=2, message_id="<1@x>")
    assert [type(e) for e in events] == [EnrollmentStepCompleted]
    after = evolve(state, events[0])
    assert (after.next_step, after.sends, after.status, after.version) == (1, 1, EnrollmentStatus.active, 2)


def test_completing_the_last_step_completes_the_enrollment():
    state = enrolled()
    state = evolve(state, complete_step(state, 0, Channel.email, NOW, 2)[0])
    events = complete_step(state, 1, Channel.email, NOW, 2)
    assert [type(e) for e in events] == [EnrollmentStepCompleted, EnrollmentCompleted]
    assert replay_from(state, events).status == EnrollmentStatus.done


def test_a_step_recorded_twice_decides_nothing_the_second_time():
    state = enrolled()
    state = evolve(state, complete_step(state, 0, Channel.email, NOW, 3)[0])
    assert complete_step(state, 0, Channel.email, NOW, 3) == []


def test_a_finished_enrollment_takes_no_more_steps():
    state = enrolled()
    for step in range(1):
        state = replay_from(state, complete_step(state, step, Channel.email, NOW, 1))
    assert complete_step(state, 1, Channel.email, NOW, 1) == []


def replay_from(state, events):
    for event in events:
        state = evolve(state, event)
    return state
