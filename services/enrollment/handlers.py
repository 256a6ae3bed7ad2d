"""Enrollment service handlers: commands and queries from the gateway, and reactions to events."""

from __future__ import annotations

import uuid
from typing import Sequence as Seq

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.base import Event, decode_event, stream_id
from contracts.commands import (
    ArchiveSequence,
    ChangeSequenceSteps,
    CreateContact,
    CreateSequence,
    EnrollContact,
    GetContact,
    GetEnrollment,
    GetSequence,
    ListEnrollments,
    PauseSequence,
    ResumeSequence,
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
from contracts.views import ContactView, Created, EnrollmentView, SequenceView
from sequences.bootstrap import Runtime
from sequences.eventlog.store import Append, Causation, ConcurrencyConflict
from sequences.messaging.consumer import Delivery, NotReady, Subscription, apply_in
from sequences.messaging.rpc import Rejected
from services.enrollment import domain
from services.enrollment.projections import projector


class EnrollmentHandlers:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    # --- writing ----------------------------------------------------------------------------

    async def _record(self, conn: AsyncConnection, appends: Seq[Append], cause: Causation):
        """Append, and update this service's read models in the same transaction (so the API
        reads its own writes; the consumer later finds them applied and skips them)."""
        for envelope in await self.runtime.store.append(conn, appends, cause):
            await apply_in(conn, projector, envelope)

    async def _load(self, conn: AsyncConnection, category: str, key: uuid.UUID, evolve):
        stream = stream_id(category, key)
        events = [decode_event(e) for e in await self.runtime.store.read_stream(conn, stream)]
        return domain.replay(events, evolve), stream

    async def _sequence(self, conn: AsyncConnection, sequence_id: uuid.UUID):
        state, stream = await self._load(conn, "sequence", sequence_id, domain.evolve_sequence)
        if state is None:
            raise Rejected(404, f"no such sequence: {sequence_id}", "sequence_id")
        return state, stream

    async def create_sequence(self, command: CreateSequence) -> Created:
        sequence_id = uuid.uuid4()
        event = SequenceCreated(sequence_id=sequence_id, **command.model_dump())
        async with self.runtime.engine.begin() as conn:
            await self._record(conn, [Append(event.stream_id(), 0, [event])], Causation.new())
        return Created(id=sequence_id)

    async def change_steps(self, command: ChangeSequenceSteps) -> Created:
        async def decide(conn, state, stream):
            events = domain.change_steps(state, command.steps)
            await self._record(conn, [Append(stream, state.version, events)], Causation.new())
            if events:
                await self._complete_those_with_nothing_left(conn, state.sequence_id,
                                                             command.steps)
        return await self._on_sequence(command.sequence_id, decide)

    async def pause_sequence(self, command: PauseSequence) -> Created:
        return await self._decide_on_sequence(command.sequence_id, domain.pause)

    async def resume_sequence(self, command: ResumeSequence) -> Created:
        return await self._decide_on_sequence(command.sequence_id, domain.resume)

    async def archive_sequence(self, command: ArchiveSequence) -> Created:
        return await self._decide_on_sequence(command.sequence_id, domain.archive)

    async def _decide_on_sequence(self, sequence_id: uuid.UUID, decision) -> Created:
        async def decide(conn, state, stream):
            events = decision(state, self.runtime.clock.now())
            await self._record(conn, [Append(stream, state.version, events)], Causation.new())
        return await self._on_sequence(sequence_id, decide)

    async def _on_sequence(self, sequence_id: uuid.UUID, decide) -> Created:
        try:
            async with self.runtime.engine.begin() as conn:
                state, stream = await self._sequence(conn, sequence_id)
                await decide(conn, state, stream)
        except domain.Refused as refused:
            raise Rejected(409, str(refused), refused.field) from None
        except ConcurrencyConflict:
            raise Rejected(409, "the sequence changed meanwhile; retry", "sequence_id") from None
        return Created(id=sequence_id)

    async def _complete_those_with_nothing_left(self, conn, sequence_id, steps) -> None:
        active = await conn.execute(
            text("SELECT enrollment_id FROM enrollment.enrollments"
                 " WHERE sequence_id = :id AND status = 'active'"),
            {"id": sequence_id},
        )
        now = self.runtime.clock.now()
        appends = []
        for (enrollment_id,) in active:
            state, stream = await self._load(conn, "enrollment", enrollment_id, domain.evolve)
            events = domain.complete_if_nothing_left(state, steps, now)
            if events:
                appends.append(Append(stream, state.version, events))
        await self._record(conn, appends, Causation.new())

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
                sequence, _ = await self._sequence(conn, command.sequence_id)
                domain.require_live(sequence)
                await _require(conn, "contacts", "contact_id", command.contact_id)
                await self._record(conn, [Append(event.stream_id(), 0, [event])], Causation.new())
        except domain.Refused as refused:
            raise Rejected(409, str(refused), refused.field) from None
        except ConcurrencyConflict:
            raise Rejected(
                409, f"contact is already enrolled in this sequence ({enrollment_id})", "contact_id"
            ) from None
        return Created(id=enrollment_id)

    # --- reacting to other services ---------------------------------------------------------

    async def on_email_sent(self, event: EmailSent, d: Delivery) -> None:
        state, stream = await self._load(d.conn, "enrollment", event.enrollment_id, domain.evolve)
        if state is None:
            raise NotReady(f"enrollment {event.enrollment_id} not seen yet")
        sequence, _ = await self._sequence(d.conn, state.sequence_id)
        step = next((s for s in sequence.steps if s.step_id == event.step_id), None)
        if step is None:
            return  # the step was deleted after it went out; nothing to move along
        events = domain.complete_step(state, step, event.step_index, event.sent_at,
                                      sequence.steps, event.message_id)
        await self._record(d.conn, [Append(stream, state.version, events)], d.causation)

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
        state, stream = await self._load(d.conn, "enrollment", ending.enrollment_id, domain.evolve)
        if state is not None:
            await self._record(d.conn, [Append(stream, state.version, domain.end(state, ending))],
                               d.causation)

    # --- queries ----------------------------------------------------------------------------

    async def get_sequence(self, query: GetSequence) -> SequenceView:
        row = await self._one(
            "SELECT * FROM enrollment.sequences WHERE sequence_id = :id", query.sequence_id,
            "sequence_id",
        )
        return SequenceView(**row, headline=f"{row['enrolled']} enrolled · {row['state']}")

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
