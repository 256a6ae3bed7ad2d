"""The enrollment service's aggregates: evolve and decide, without I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from contracts.events import (
    ContactEnrolled,
    EnrollmentCompleted,
    EnrollmentReplied,
    EnrollmentStepCompleted,
    SequenceCreated,
)
from contracts.values import Step, next_step
from contracts.views import EnrollmentStatus
from services.enrollment import domain
from services.enrollment.domain import complete_step, enrollment_id_for, evolve, replay

NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)


def step(subject: str | None = None, wait: int = 0) -> Step:
    return Step(channel="email", subject=subject, body="hi", wait_days=wait)


A, B, C = step("a"), step(wait=2), step(wait=3)


def enrolled():
    sequence_id, contact_id = uuid.uuid4(), uuid.uuid4()
    return replay([ContactEnrolled(enrollment_id=enrollment_id_for(sequence_id, contact_id),
                                   sequence_id=sequence_id, contact_id=contact_id, enrolled_at=NOW,
                                   email="kim@example.com")])


def apply(state, events):
    for event in events:
        state = evolve(state, event)
    return state


def test_the_same_contact_and_sequence_always_map_to_the_same_enrollment_stream():
    s, c = uuid.uuid4(), uuid.uuid4()
    assert enrollment_id_for(s, c) == enrollment_id_for(s, c) != enrollment_id_for(s, c, attempt=2)


def test_completing_a_middle_step_moves_to_the_next():
    state = enrolled()
    events = complete_step(state, A, 0, NOW, [A, B], message_id="<1@x>")
    assert [type(e) for e in events] == [EnrollmentStepCompleted]
    after = apply(state, events)
    assert (after.completed, after.sends, after.status, after.version) == ((A.step_id,), 1, EnrollmentStatus.active, 2)


def test_completing_the_last_step_completes_the_enrollment():
    state = apply(enrolled(), complete_step(enrolled(), A, 0, NOW, [A, B]))
    events = complete_step(state, B, 1, NOW, [A, B])
    assert [type(e) for e in events] == [EnrollmentStepCompleted, EnrollmentCompleted]
    assert apply(state, events).status == EnrollmentStatus.done


def test_a_step_recorded_twice_decides_nothing_the_second_time():
    state = enrolled()
    state = apply(state, complete_step(state, A, 0, NOW, [A, B, C]))
    assert complete_step(state, A, 0, NOW, [A, B, C]) == []


def test_an_ended_enrollment_takes_no_more_steps_and_ends_once():
    state = enrolled()
    reply = EnrollmentReplied(enrollment_id=state.enrollment_id, reply_message_id="<r@x>", replied_at=NOW)
    state = apply(state, domain.end(state, reply))
    assert state.status == EnrollmentStatus.replied
    assert complete_step(state, A, 0, NOW, [A, B]) == []
    assert domain.end(state, reply) == []


def test_next_step_skips_what_was_done_and_what_was_inserted_behind():
    assert next_step([A, B, C], set()) == A
    assert next_step([A, B, C], {A.step_id}) == B
    inserted = step(wait=1)
    assert next_step([inserted, A, B, C], {A.step_id}) == B  # inserted before: not run
    assert next_step([A, C], {A.step_id}) == C  # B deleted while waited on: moves to the next
    assert next_step([A, B], {A.step_id, B.step_id}) is None


def test_deleting_every_remaining_step_completes_the_enrollment():
    state = apply(enrolled(), complete_step(enrolled(), A, 0, NOW, [A, B]))
    assert [type(e) for e in domain.complete_if_nothing_left(state, [A], NOW)] == [EnrollmentCompleted]
    assert domain.complete_if_nothing_left(state, [A, B], NOW) == []


def test_a_sequence_pauses_resumes_and_archives_and_refuses_enrollment_unless_live():
    created = SequenceCreated(sequence_id=uuid.uuid4(), name="s", sender_name="n",
                              sender_email="a@b.co", timezone="Asia/Seoul",
                              send_policy={"mode": "as_soon_as_due"}, steps=[A])
    live = replay([created], domain.evolve_sequence)
    paused = replay([created, *domain.pause(live, NOW)], domain.evolve_sequence)
    assert paused.state == "paused" and domain.pause(paused, NOW) == []
    with pytest.raises(domain.Refused):
        domain.require_live(paused)
    resumed = domain.evolve_sequence(paused, domain.resume(paused, NOW)[0])
    domain.require_live(resumed)
    archived = domain.evolve_sequence(resumed, domain.archive(resumed, NOW)[0])
    with pytest.raises(domain.Refused):
        domain.change_steps(archived, [A, B])


def test_who_may_be_enrolled():
    from services.enrollment.domain import Admission, admission

    assert admission(False, "a@x.co", None, None, False) is Admission.enroll
    assert admission(True, "a@x.co", None, None, True) is Admission.excluded_opted_out
    assert admission(False, "a@x.co", "active", "a@x.co", True) is Admission.skipped_active
    assert admission(False, "a@x.co", "done", "a@x.co", False) is Admission.skipped_ended
    assert admission(False, "a@x.co", "done", "a@x.co", True) is Admission.enroll
    assert admission(False, "A@x.co", "bounced", "a@x.co", True) is Admission.refused_bounced
    assert admission(False, "new@x.co", "bounced", "a@x.co", True) is Admission.enroll


def test_a_contact_update_records_only_what_changed():
    from contracts.events import ContactCreated

    created = ContactCreated(contact_id=uuid.uuid4(), name="김민수", email="kim@example.com",
                             tags=["vip"])
    state = domain.evolve_contact(None, created)
    assert domain.update_contact(state, {"name": "김민수", "tags": ["vip"]}) == []
    [updated] = domain.update_contact(state, {"name": "김민준", "company": None})
    assert updated.changes == {"name": "김민준"}
