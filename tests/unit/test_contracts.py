"""Contract models refuse bad input, naming the field."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from contracts.base import EVENT_TYPES, EventEnvelope, decode_event
from contracts.commands import PreviewSchedule, SequenceDefinition
from contracts.schema import public_models
from sequences.messaging.rpc import problem_from_validation

GOOD = {
    "name": "견적 후속",
    "sender_name": "김 영업",
    "sender_email": "rep@sales.example",
    "timezone": "Asia/Seoul",
    "send_policy": {"mode": "send_time", "send_time": "09:30"},
    "steps": [
        {"channel": "email", "subject": "{{고객명}}님, 견적 건", "body": "안녕하세요 {{고객명}}님", "wait_days": 0},
        {"channel": "email", "body": "다시 연락드립니다, {{회사명}}", "wait_days": 2},
    ],
}


def fields_of(**changes) -> set[str]:
    with pytest.raises(ValidationError) as error:
        SequenceDefinition.model_validate({**GOOD, **changes})
    return {e.field for e in problem_from_validation(error.value).errors}


def test_a_good_sequence_is_accepted():
    assert len(SequenceDefinition.model_validate(GOOD).steps) == 2


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"sender_name": "A\r\nBcc: x@y.z"}, "sender_name"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"send_policy": {"mode": "send_time", "send_time": "25:00"}}, "send_policy.send_time"),
        ({"steps": [{**GOOD["steps"][0], "wait_days": -1}]}, "steps[0].wait_days"),
        ({"steps": [{**GOOD["steps"][0], "wait_days": 366}]}, "steps[0].wait_days"),
        ({"steps": [{**GOOD["steps"][0], "subject": "Hi\nthere"}]}, "steps[0].subject"),
        ({"steps": [{**GOOD["steps"][0], "body": "{{unknown}}"}]}, "steps[0].body"),
        ({"sender_email": "not an address"}, "sender_email"),
        ({"name": ""}, "name"),
        ({"language": "fr"}, "language"),
        ({"language": "KO"}, "language"),
    ],
)
def test_bad_input_names_the_field(changes, field):
    assert field in fields_of(**changes)


def test_the_language_recipients_read_is_korean_or_english_and_english_by_default():
    from contracts.events import SequenceCreated
    from sequences import i18n

    assert SequenceDefinition.model_validate(GOOD).language == "en"
    assert SequenceDefinition.model_validate({**GOOD, "language": "ko"}).language == "ko"
    # a SequenceCreated written before the setting existed reads as English
    old = SequenceCreated.model_validate({
        **GOOD, "sequence_id": "00000000-0000-0000-0000-000000000001"})
    assert old.language == "en"
    assert set(SequenceDefinition.model_fields["language"].annotation.__args__) == set(
        i18n.LANGUAGES), "the contract's languages are the catalogs' languages"


def test_the_first_email_step_needs_a_subject():
    steps = [{**GOOD["steps"][0], "subject": None}]
    with pytest.raises(ValidationError, match="first email step needs a subject"):
        SequenceDefinition.model_validate({**GOOD, "steps": steps})


def test_an_unknown_variable_is_reported_with_its_position():
    with pytest.raises(ValidationError, match=r"\{\{foo\}\} at position 6"):
        SequenceDefinition.model_validate({**GOOD, "steps": [{**GOOD["steps"][0], "body": "Hello {{foo}}"}]})


def test_every_event_has_a_schema_version_and_a_json_schema():
    assert set(EVENT_TYPES) <= set(public_models())
    for event_type in EVENT_TYPES.values():
        assert event_type.schema_version >= 1
        assert event_type.nats_subject().startswith("seq.events.")


def test_old_schema_versions_are_upcast(monkeypatch):
    from contracts import base
    from contracts.events import ContactCreated

    monkeypatch.setattr(ContactCreated, "schema_version", 2)
    monkeypatch.setitem(base.UPCASTERS, ("ContactCreated", 1),
                        lambda data: {("name" if k == "full_name" else k): v for k, v in data.items()})
    envelope = EventEnvelope(
        event_id="00000000-0000-0000-0000-000000000001",
        workspace_id="00000000-0000-0000-0000-000000000009", stream_id="contact-x", version=1,
        type="ContactCreated", schema_version=1, occurred_at="2026-11-26T00:00:00Z",
        correlation_id="00000000-0000-0000-0000-000000000002",
        data={"contact_id": "00000000-0000-0000-0000-000000000003", "full_name": "김민수",
              "email": "kim@example.com"},
    )
    assert decode_event(envelope).name == "김민수"


def test_the_published_json_schemas_match_the_models(tmp_path, repo_root):
    """docs/schemas is what other systems read: regenerate it with `sequences contracts export`."""
    from contracts.schema import export_json_schemas

    for path in export_json_schemas(tmp_path):
        published = repo_root / "docs" / "schemas" / path.name
        assert published.exists(), f"{published} is missing"
        assert published.read_text() == path.read_text(), f"{published} is out of date"


def test_the_published_asyncapi_document_matches_the_contracts(tmp_path, repo_root):
    """docs/asyncapi.json documents every event on its subject (generated by FastStream)."""
    from contracts.schema import export_asyncapi

    fresh = export_asyncapi(tmp_path / "asyncapi.json").read_text()
    assert (repo_root / "docs" / "asyncapi.json").read_text() == fresh, "regenerate it"
    addresses = {c["address"] for c in __import__("json").loads(fresh)["channels"].values()}
    assert addresses == {t.nats_subject() for t in EVENT_TYPES.values()}


@pytest.mark.parametrize("start", [-6955913339, "1999-12-31T23:59:59", "2200-01-01T00:00:00+09:00",
                                   "9999-12-31T23:59:59-14:00"])
def test_a_schedule_start_outside_2000_to_2200_is_refused(start):
    with pytest.raises(ValidationError) as error:
        PreviewSchedule(workspace_id=uuid.uuid4(), sequence_id=uuid.uuid4(), start=start)
    assert [e.field for e in problem_from_validation(error.value).errors] == ["start"]


def test_a_schedule_start_in_range_is_kept_as_given():
    query = PreviewSchedule(workspace_id=uuid.uuid4(), sequence_id=uuid.uuid4(),
                            start="2027-03-12T10:00:00")
    assert query.start.isoformat() == "2027-03-12T10:00:00"
