"""`in_layers`: many streams' multi-event appends as runs of one type, each stream in order."""

import uuid
from datetime import UTC, datetime

from contracts.events import EnrollmentCompleted, EnrollmentStepCompleted
from sequences.eventlog.store import ANY_VERSION, Append, in_layers

NOW = datetime(2026, 12, 4, tzinfo=UTC)


def _last_step(enrollment_id):
    return [EnrollmentStepCompleted(enrollment_id=enrollment_id, step_id=uuid.uuid4(),
                                    step_index=2, channel="email", completed_at=NOW),
            EnrollmentCompleted(enrollment_id=enrollment_id, completed_at=NOW)]


def test_every_streams_first_event_comes_before_any_second_one():
    a, b = uuid.uuid4(), uuid.uuid4()
    appends = [Append(f"enrollment-{a}", 5, _last_step(a)), Append(f"enrollment-{b}", 7,
                                                                   _last_step(b))]
    layered = in_layers(appends)
    assert [(p.stream_id, p.expected_version, type(p.events[0]).__name__) for p in layered] == [
        (f"enrollment-{a}", 5, "EnrollmentStepCompleted"),
        (f"enrollment-{b}", 7, "EnrollmentStepCompleted"),
        (f"enrollment-{a}", 6, "EnrollmentCompleted"),
        (f"enrollment-{b}", 8, "EnrollmentCompleted")]
    # the same events, none lost or doubled
    assert sorted(id(e) for p in layered for e in p.events) == sorted(
        id(e) for p in appends for e in p.events)


def test_an_append_at_any_version_stays_whole():
    a = uuid.uuid4()
    whole = Append(f"enrollment-{a}", ANY_VERSION, _last_step(a))
    assert in_layers([whole]) == [whole]
