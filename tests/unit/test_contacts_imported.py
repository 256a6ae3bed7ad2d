"""An import's chunk of new contacts as `ContactsImported` events (pure parts): what the domain
decides for a chunk, the state of a contact whose stream begins in its chunk's event, and what
webhooks receive of such an event."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime

from contracts.base import EventEnvelope, stream_id
from contracts.events import (ContactCreated, ContactOptedOut, ContactsImported,
                              ContactUpdated, imported_row)
from services.enrollment import domain
from services.webhooks.domain import Wanted, delivered, ordering_key

WORKSPACE = uuid.uuid4()


def ids():
    counter = itertools.count(1)
    return lambda: uuid.UUID(int=next(counter))


def envelope_of(event, workspace=WORKSPACE) -> EventEnvelope:
    return EventEnvelope(event_id=uuid.uuid4(), workspace_id=workspace,
                         stream_id=event.stream_id(), version=1, type=event.type_name(),
                         schema_version=1, occurred_at=datetime(2026, 12, 2, tzinfo=UTC),
                         correlation_id=uuid.uuid4(), data=event.model_dump(mode="json"))


def known_contact(email: str, **fields) -> domain.Contact:
    created = ContactCreated(contact_id=uuid.uuid4(), email=email, **fields)
    return domain.replay_contact([created])


def test_new_addresses_of_a_chunk_are_one_event_and_known_ones_their_own_changes():
    kim = known_contact("kim@x.example", name="Kim")
    created, updates, counts = domain.import_contacts(
        [{"email": "lee@x.example", "name": "Lee", "tags": ["vip"]},
         {"email": "kim@x.example", "name": "Kim"},  # known, unchanged
         {"email": "park@x.example"},
         {"email": "Lee@x.example", "company": "Hanbit"}],  # the new one again: merged
        {"kim@x.example": kim}, ids())
    assert counts == {"created": 2, "updated": 1, "unchanged": 1}
    [event] = created
    assert isinstance(event, ContactsImported)
    assert [(c.email, c.name, c.company, c.tags) for c in event.contacts] == [
        ("Lee@x.example", "Lee", "Hanbit", ["vip"]), ("park@x.example", "", "", [])]
    assert event.begun_streams() == [stream_id("contact", c.contact_id) for c in event.contacts]
    assert updates == [(kim, [])]

    _, [(_, events)], counts = domain.import_contacts(
        [{"email": "kim@x.example", "company": "Acme"}], {"kim@x.example": kim}, ids())
    assert events == [ContactUpdated(contact_id=kim.contact_id, changes={"company": "Acme"})]
    assert counts == {"created": 0, "updated": 1, "unchanged": 0}


def test_a_chunk_too_large_for_one_message_is_several_events():
    long_tags = [f"tag-{i}-" + "x" * 90 for i in range(50)]  # about 5 KB of JSON a row
    rows = [{"email": f"n{i}@x.example", "tags": long_tags} for i in range(300)]
    created, _, counts = domain.import_contacts(rows, {}, ids())
    assert counts["created"] == 300 and len(created) > 1
    assert sum(len(event.contacts) for event in created) == 300
    for event in created:
        assert len(event.model_dump_json()) <= domain.IMPORTED_BYTES + 10_000


def test_an_imported_contact_begins_in_its_chunk_and_its_own_stream_counts_from_zero():
    event = ContactsImported(import_id=uuid.uuid4(), contacts=[
        {"contact_id": uuid.uuid4(), "email": f"n{i}@x.example", "name": f"N{i}",
         "timezone": "Asia/Seoul"} for i in range(3)])
    origin = envelope_of(event)
    second = event.contacts[1].contact_id
    row = imported_row(origin, second)
    created = ContactCreated.model_validate(row)
    assert (created.contact_id, created.name, created.timezone) == (second, "N1", "Asia/Seoul")

    imported = domain.imported_contact(row)
    assert imported == domain.replace(domain.replay_contact([created]), version=0)
    state = domain.replay_contact([], imported)
    assert (state.version, state.fields["name"], state.opted_out) == (0, "N1", False)
    later = domain.replay_contact(
        [ContactUpdated(contact_id=second, changes={"name": "Ni"}),
         ContactOptedOut(contact_id=second, opted_out_at=datetime.now(UTC), source="manual")],
        imported)
    assert (later.version, later.fields["name"], later.opted_out) == (2, "Ni", True)
    assert domain.update_contact(state, {"name": "N1"}) == []  # a repeated import: unchanged


def test_webhooks_get_each_imported_contact_as_a_contact_created_with_a_stable_id():
    event = ContactsImported(import_id=uuid.uuid4(), contacts=[
        {"contact_id": uuid.uuid4(), "email": f"n{i}@x.example"} for i in range(2)])
    origin = envelope_of(event)
    wants_created = Wanted(uuid.uuid4(), WORKSPACE, ("ContactCreated",))
    wants_replies = Wanted(uuid.uuid4(), WORKSPACE, ("EnrollmentReplied",))
    everything = Wanted(uuid.uuid4(), WORKSPACE, ("*",))

    assert delivered(origin, [wants_replies]) == []
    first = delivered(origin, [wants_replies, wants_created])
    assert [e.type for e in first] == ["ContactCreated", "ContactCreated"]
    assert [e.data["email"] for e in first] == ["n0@x.example", "n1@x.example"]
    assert [ContactCreated.model_validate(e.data).contact_id for e in first] == [
        c.contact_id for c in event.contacts]
    assert [e.event_id for e in delivered(origin, [everything])] == [e.event_id for e in first]
    assert len({e.event_id for e in first} | {origin.event_id}) == 3
    assert [ordering_key(e) for e in first] == [stream_id("contact", c.contact_id)
                                                for c in event.contacts]
    assert all(wants_created.wants(e) and not wants_replies.wants(e) for e in first)
    other = ContactCreated(contact_id=uuid.uuid4(), email="o@x.example")
    plain = envelope_of(other)
    assert delivered(plain, []) == [plain]
