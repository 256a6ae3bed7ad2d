"""The shapes every event, command and reply shares.

An event is a small past-tense model (`ContactEnrolled`); what the log stores and NATS carries is
its envelope: identity, position in its stream, schema version, causality and trace context.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from contracts.subjects import event_subject


class Event(BaseModel):
    """A fact that happened. Subclasses name the stream category and the field holding its id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    category: ClassVar[str]
    stream_key: ClassVar[str]
    schema_version: ClassVar[int] = 1

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__

    @classmethod
    def nats_subject(cls) -> str:
        return event_subject(cls.category, cls.type_name())

    def stream_id(self) -> str:
        return stream_id(self.category, getattr(self, self.stream_key))

    def begun_streams(self) -> list[str]:
        """Streams whose first fact is inside this event (the contacts of a `ContactsImported`):
        the log notes where each begins, so whoever reads one of them finds it."""
        return []


class EventEnvelope(BaseModel):
    """An event as stored in the log and carried on NATS."""

    # Parsing JSON caches keys only: an envelope's values (ids, times) are new each time, and
    # caching them filled pydantic-core's string cache with strings never seen again
    # (bench/experiments/memory.py).
    model_config = ConfigDict(frozen=True, cache_strings="keys")

    event_id: uuid.UUID
    # the workspace whose data the event is: subscribers and webhooks filter by it
    workspace_id: uuid.UUID
    stream_id: str
    version: int = Field(ge=1)
    type: str
    schema_version: int = Field(ge=1)
    occurred_at: datetime
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    data: dict[str, Any]

    @property
    def category(self) -> str:
        return self.stream_id.split("-", 1)[0]

    @property
    def nats_subject(self) -> str:
        return event_subject(self.category, self.type)


def stream_id(category: str, key: uuid.UUID | str) -> str:
    return f"{category}-{key}"


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """An error answer (RFC 9457 problem details), naming the fields at fault."""

    status: int
    title: str
    detail: str | None = None
    errors: list[FieldError] = []


class Reply(BaseModel):
    """The answer to a command or query: a result, or a problem."""

    result: dict[str, Any] | list[Any] | None = None
    problem: Problem | None = None


# --- the registry of event types and their upcasters ----------------------------------------

EVENT_TYPES: dict[str, type[Event]] = {}
# (type, from_version) -> function turning data of that version into data of the next one
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


def register(*event_types: type[Event]) -> None:
    for event_type in event_types:
        EVENT_TYPES[event_type.type_name()] = event_type


def upcaster(event_type: str, from_version: int):
    """Register a function that lifts stored data of `from_version` to `from_version + 1`."""

    def decorate(func: Callable[[dict[str, Any]], dict[str, Any]]):
        UPCASTERS[(event_type, from_version)] = func
        return func

    return decorate


class UnknownEventType(LookupError):
    pass


def current_data(envelope: EventEnvelope) -> dict[str, Any]:
    """The event's data as of the current schema version (upcast, not validated): what bulk
    handlers read, where validating a million events would cost more than the work itself."""
    try:
        event_type = EVENT_TYPES[envelope.type]
    except KeyError:
        raise UnknownEventType(envelope.type) from None
    data, version = envelope.data, envelope.schema_version
    while version < event_type.schema_version:
        data = UPCASTERS[(envelope.type, version)](dict(data))
        version += 1
    return data


def decode_event(envelope: EventEnvelope) -> Event:
    """The typed event of an envelope, upcast from whatever schema version it was written in."""
    return EVENT_TYPES[envelope.type].model_validate(current_data(envelope))
