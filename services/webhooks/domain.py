"""Webhooks, the pure part: which webhooks want an event, what orders its deliveries, and when
a failed delivery is tried again."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from typing import Iterable, Sequence

from contracts.base import EventEnvelope, current_data, stream_id
from contracts.events import ContactCreated, ContactsImported
from contracts.webhooks import EVERY_TYPE


@dataclass(frozen=True)
class Wanted:
    """A webhook as the feed sees it: whose events, which types."""

    webhook_id: uuid.UUID
    workspace_id: uuid.UUID
    event_types: tuple[str, ...]

    def wants(self, envelope: EventEnvelope) -> bool:
        return envelope.workspace_id == self.workspace_id and (
            EVERY_TYPE in self.event_types or envelope.type in self.event_types)


def ordering_key(envelope: EventEnvelope) -> str:
    """Deliveries of one key go out in order: an enrollment's events (whatever stream they are
    in: its schedule, its deliveries, its replies) share its id; a contact's creation goes
    with its stream (an imported one's is in its chunk's); others their stream."""
    enrollment_id = envelope.data.get("enrollment_id")
    if enrollment_id:
        return f"enrollment-{enrollment_id}"
    if envelope.type == _CREATED:
        return stream_id("contact", envelope.data["contact_id"])
    return envelope.stream_id


_CREATED = ContactCreated.type_name()
_IMPORTED = ContactsImported.type_name()
# the event ids of imported contacts' creations: derived, so a redelivery queues nothing twice
_IMPORTED_CONTACT = uuid.UUID("0b6f3f0e-7c43-4d55-9a43-5c0f2f8f3a51")


def feed_types(webhooks_types: Iterable[Sequence[str]]) -> set[str] | None:
    """The event types the feed reads for webhooks wanting these types: None (every type) when
    one wants every type, and a ContactsImported where one wants ContactCreated (its contacts
    are delivered as those)."""
    types: set[str] = set()
    for event_types in webhooks_types:
        if EVERY_TYPE in event_types:
            return None
        types.update(event_types)
    if _CREATED in types:
        types.add(_IMPORTED)
    return types


def delivered(envelope: EventEnvelope, wanted: Sequence[Wanted]) -> list[EventEnvelope]:
    """What webhooks receive of an event: the event itself; of a `ContactsImported`, each
    contact it created as a `ContactCreated` (only when one of `wanted` wants those), with an
    event id derived from the chunk's and the contact's (contracts/webhooks.py)."""
    if envelope.type != _IMPORTED:
        return [envelope]
    as_created = envelope.model_copy(update={"type": _CREATED, "data": {}})
    if not any(webhook.wants(as_created) for webhook in wanted):
        return []
    return [envelope.model_copy(update={
        "event_id": uuid.uuid5(_IMPORTED_CONTACT, f"{envelope.event_id}:{contact['contact_id']}"),
        "type": _CREATED, "schema_version": ContactCreated.schema_version, "data": contact})
        for contact in current_data(envelope)["contacts"]]


@dataclass(frozen=True)
class RetryPolicy:
    first_delay: timedelta
    max_attempts: int
    longest_delay: timedelta = timedelta(hours=1)

    def after_failure(self, attempts: int, now: datetime) -> datetime | None:
        """When to try again after `attempts` failed ones: doubling delays, or None (give up)."""
        if attempts >= self.max_attempts:
            return None
        return now + min(self.first_delay * 2 ** (attempts - 1), self.longest_delay)
