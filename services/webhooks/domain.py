"""Webhooks, the pure part: which webhooks want an event, what orders its deliveries, and when
a failed delivery is tried again."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from contracts.base import EventEnvelope
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
    in: its schedule, its deliveries, its replies) share its id; others their stream."""
    enrollment_id = envelope.data.get("enrollment_id")
    return f"enrollment-{enrollment_id}" if enrollment_id else envelope.stream_id


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
