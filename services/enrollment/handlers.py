"""Enrollment service handlers: commands and queries from the gateway, and reactions to events."""

from __future__ import annotations

import uuid
from typing import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.base import Event, decode_event, stream_id
from contracts.commands import (
    CreateContact,
    CreateSequence,
    EnrollContact,
    GetContact,
    GetEnrollment,
    GetSequence,
    ListEnrollments,
)
from contracts.events import (
    BounceDetected,
    ContactCreated,
    ContactEnrolled,
    EmailSent,
    EnrollmentBounced,
    EnrollmentReplied,
    ReplyDetected,
    SequenceCreated,
)
from contracts.values import Channel
from contracts.views import ContactView, Created, EnrollmentView, SequenceView
from sequences.bootstrap import Runtime
from sequences.eventlog.store import Append, Causation, ConcurrencyConflict
from sequences.messaging.consumer import Delivery, Subscription, apply_in
from sequences.messaging.rpc import Rejected
from services.enrollment import domain
from services.enrollment.projections import projector


class EnrollmentHandlers:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    # --- writing ----------------------------------------------------------------------------

    async def _record(self, conn: AsyncConnection, appends: Sequence[Append], cause: Causation):
        """Append, and update this service's read models in the same transaction (so the API
        reads its own writes; the consumer later finds them applied and skips them)."""
        for envelope in await self.runtime.store.append(conn, appends, cause):
            await apply_in(conn, projector, envelope)

    async def create_sequence(self, command: CreateSequence) -> Created:
        sequence_id = uuid.uuid4()
        event = SequenceCreated(sequence_id=sequence_id, **command.model_dump())
        async with self.runtime.engine.begin() as conn:
            await self._record(conn, [Append(event.stream_id(), 0, [event])], Causation.new())
        return Created(id=sequence_id)

    async def create_contact(self, command: CreateContact) -> Created:
        contact_id = uuid.uuid4()
        event = ContactCreated(contact_id=contact_id, **command.model_dump())
        async with self.runtime.engine.begin() as conn:
            await self._record(conn, [Append(event.stream_id(), 0, [event])], Causation.new())
        return Created(id=contact_id)

    async def enroll_contact(self, command: EnrollContact) -> Created:
        enrollment_id = domain.enrollment_id_for(command.sequence_id, command.contact_id)
        event = ContactEnrolled(
            enrollment_id=enrollment_id,
            sequence_id=command.sequence_id,
            contact_id=command.contact_id,
            enrolled_at=self.runtime.clock.now(),
        )
        try:
            async with self.runtime.engine.begin() as conn:
                await _require(conn, "sequences", "sequence_id", command.sequence_id)
                await _require(conn, "contacts", "contact_id", command.contact_id)
                await self._record(conn, [Append(event.stream_id(), 0, [event])], Causation.new())
        except ConcurrencyConflict:
            raise Rejected(
                409, f"contact is already enrolled in this sequence ({enrollment_id})", "contact_id"
            ) from None
        return Created(id=enrollment_id)

    # --- reacting to other services ---------------------------------------------------------

    async def on_email_sent(self, event: EmailSent, d: Delivery) -> None:
        await self._complete_step(
            d, event.enrollment_id, event.step_index, Channel.email, event.sent_at, event.message_id
        )

    async def on_reply(self, event: ReplyDetected, d: Delivery) -> None:
        await self._end(d, EnrollmentReplied(
            enrollment_id=event.enrollment_id, reply_message_id=event.message_id,
            replied_at=event.received_at))

    async def on_bounce(self, event: BounceDetected, d: Delivery) -> None:
        if event.kind != "hard":
            return  # soft bounces are counted by the thread-watcher, which decides when to stop
        await self._end(d, EnrollmentBounced(
            enrollment_id=event.enrollment_id, bounced_at=event.detected_at,
            reason=f"{event.status or ''} {event.diagnostic}".strip() or "hard bounce"))

    async def _end(self, d: Delivery, ending: Event) -> None:
        state, stream = await self._load(d.conn, ending.enrollment_id)
        if state is not None:
            await self._record(d.conn, [Append(stream, state.version, domain.end(state, ending))],
                               d.causation)

    async def _load(self, conn: AsyncConnection, enrollment_id: uuid.UUID):
        stream = stream_id("enrollment", enrollment_id)
        return domain.replay(await self._events(conn, stream)), stream

    async def _complete_step(self, d, enrollment_id, step_index, channel, at, message_id=None):
        state, stream = await self._load(d.conn, enrollment_id)
        if state is None:
            return
        step_count = (
            await d.conn.execute(
                text("SELECT jsonb_array_length(steps) FROM enrollment.sequences"
                     " WHERE sequence_id = :id"),
                {"id": state.sequence_id},
            )
        ).scalar_one()
        events = domain.complete_step(state, step_index, channel, at, step_count, message_id)
        await self._record(d.conn, [Append(stream, state.version, events)], d.causation)

    async def _events(self, conn: AsyncConnection, stream: str) -> list[Event]:
        return [decode_event(e) for e in await self.runtime.store.read_stream(conn, stream)]

    # --- queries ----------------------------------------------------------------------------

    async def get_sequence(self, query: GetSequence) -> SequenceView:
        row = await self._one(
            "SELECT * FROM enrollment.sequences WHERE sequence_id = :id", query.sequence_id,
            "sequence_id",
        )
        return SequenceView(
            **{k: row[k] for k in row.keys() if k != "enrolled"},
            enrolled=row["enrolled"],
            headline=f"{row['enrolled']} enrolled · {row['state']}",
        )

    async def get_contact(self, query: GetContact) -> ContactView:
        row = await self._one(
            "SELECT * FROM enrollment.contacts WHERE contact_id = :id", query.contact_id,
            "contact_id",
        )
        return ContactView(**row)

    async def get_enrollment(self, query: GetEnrollment) -> EnrollmentView:
        row = await self._one(
            "SELECT * FROM enrollment.enrollments WHERE enrollment_id = :id",
            query.enrollment_id, "enrollment_id",
        )
        return EnrollmentView(**row)

    async def list_enrollments(self, query: ListEnrollments) -> list[EnrollmentView]:
        await self._one(
            "SELECT 1 AS found FROM enrollment.sequences WHERE sequence_id = :id",
            query.sequence_id, "sequence_id",
        )
        async with self.runtime.engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT * FROM enrollment.enrollments WHERE sequence_id = :id"
                     " ORDER BY enrolled_at, enrollment_id"),
                {"id": query.sequence_id},
            )
            return [EnrollmentView(**row._mapping) for row in rows]

    async def _one(self, sql: str, key: uuid.UUID, field: str) -> dict:
        async with self.runtime.engine.connect() as conn:
            row = (await conn.execute(text(sql), {"id": key})).mappings().first()
        if row is None:
            raise Rejected(404, f"no such {field.removesuffix('_id')}: {key}", field)
        return dict(row)


async def _require(conn: AsyncConnection, table: str, field: str, key: uuid.UUID) -> None:
    found = await conn.execute(
        text(f"SELECT 1 FROM enrollment.{table} WHERE {field} = :id"), {"id": key}
    )
    if found.first() is None:
        raise Rejected(404, f"no such {field.removesuffix('_id')}: {key}", field)


def process_subscription(handlers: EnrollmentHandlers) -> Subscription:
    """Reactions to other services' events that move enrollments along."""
    process = Subscription("enrollment-process", ["delivery", "inbox", "bounce"])
    process.on(EmailSent)(handlers.on_email_sent)
    process.on(ReplyDetected)(handlers.on_reply)
    process.on(BounceDetected)(handlers.on_bounce)
    return process
