"""Enrollment service: commands from the gateway (its reactions to other services' events are
in process.py).

Every write follows one pattern: load the aggregate's stream, ask the domain, append what it
decides, and update this service's read models in the same transaction (`record`).

A command acts in its workspace only: an aggregate of another workspace is as absent as one that
never existed (404), and what it appends is caused in the command's workspace.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from zoneinfo import ZoneInfo
from typing import Sequence as Seq

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.base import EventEnvelope, decode_event, stream_id
from contracts.commands import (
    AddSuppressions,
    ChangeSequenceSettings,
    ChangeSequenceSteps,
    GetWorkspaceCalendar,
    SetWorkspaceCalendar,
    CreateContact,
    CreateSequence,
    DeleteContact,
    EnrollContact,
    EnrollSegment,
    CompleteTask,
    ImportContacts,
    OptOutContact,
    PreviewSegment,
    RemoveSuppression,
    ResumeEnrollment,
    RetryEnrollment,
    Segment,
    StopEnrollment,
    UpdateContact,
)
from contracts.events import (
    AddressSuppressed,
    ContactCreated,
    ContactEnrolled,
    imported_row,
    EnrollmentStopped,
    SequenceCreated,
    SuppressionRemoved,
    TaskCompleted,
    WorkspaceCalendarChanged,
)
from contracts.texts import CONTACT_DELETED, CONTACT_OPTED_OUT, STOPPED_BY_HAND, Text, said
from contracts.views import (
    ENROLLMENT_REFUSALS,
    BulkEnrollmentResult,
    Created,
    ImportResult,
    SuppressionResult,
    WorkspaceCalendarView,
)
from contracts.values import suppression_id_for, suppression_target
from sequences.bootstrap import Runtime
from sequences.eventlog.store import Append, Causation, ConcurrencyConflict
from sequences.messaging.consumer import apply_in
from sequences.messaging.rpc import Rejected
from services.enrollment import domain
from services.enrollment.domain import Admission
from services.enrollment.projections import projector

_DECIDE_AGAIN = 3  # attempts of a command whose append lost a race

_APPEND_CHUNK = 2000  # events per statement in bulk writes
_STREAM_HEAD = text("SELECT version, workspace_id FROM eventlog.events WHERE stream_id = :stream"
                    " ORDER BY version DESC LIMIT 1")


class EnrollmentCommands:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self._sequences: OrderedDict[tuple[str, int], domain.Sequence] = OrderedDict()

    # --- the write pattern ------------------------------------------------------------------

    async def record(self, conn: AsyncConnection, appends: Seq[Append],
                     cause: Causation) -> list[EventEnvelope]:
        """Append, and update this service's read models in the same transaction (so the API
        reads its own writes; the consumer later finds them applied and skips them)."""
        appends = [a for a in appends if a.events]
        written = []
        for start in range(0, len(appends), _APPEND_CHUNK):
            envelopes = await self.runtime.store.append(
                conn, appends[start:start + _APPEND_CHUNK], cause)
            # only what the projector reads: a position kept for a stream of another category
            # (a workspace's calendar) would be one no consumer ever reaches again
            await apply_in(conn, projector,
                           [e for e in envelopes if e.category in projector.categories])
            written += envelopes
        return written

    async def load(self, conn: AsyncConnection, category: str, key: uuid.UUID, evolve,
                   workspace_id: uuid.UUID | None = None):
        """The aggregate's state (None when it has no events, or, given `workspace_id`, when it
        is another workspace's) and its stream."""
        stream = stream_id(category, key)
        envelopes = await self.runtime.store.read_stream(conn, stream)
        if envelopes and workspace_id is not None and envelopes[0].workspace_id != workspace_id:
            envelopes = []
        return domain.replay([decode_event(e) for e in envelopes], evolve), stream

    async def load_sequence(self, conn: AsyncConnection, sequence_id: uuid.UUID,
                            workspace_id: uuid.UUID | None = None):
        """The sequence aggregate (of `workspace_id`, when given). Every email sent reads it, so
        decoded states are kept by (stream, version): a new event makes a new key, a cached
        state is never stale."""
        stream = stream_id("sequence", sequence_id)
        head = (await conn.execute(_STREAM_HEAD, {"stream": stream})).first()
        if head is None or workspace_id not in (None, head.workspace_id):
            raise Rejected(404, f"no such sequence: {sequence_id}", "sequence_id")
        version = head.version
        if (state := self._sequences.get((stream, version))) is None:
            state, _ = await self.load(conn, "sequence", sequence_id, domain.evolve_sequence)
            self._sequences[(stream, state.version)] = state
            while len(self._sequences) > 1000:
                self._sequences.popitem(last=False)
        return state, stream

    async def _contact(self, conn: AsyncConnection, contact_id: uuid.UUID,
                       workspace_id: uuid.UUID | None):
        """A live contact of `workspace_id` (any, given None) and its stream; else 404."""
        state = (await self.contacts_of(conn, [contact_id], workspace_id)).get(contact_id)
        if state is None or state.deleted:
            raise Rejected(404, f"no such contact: {contact_id}", "contact_id")
        return state, stream_id("contact", contact_id)

    async def contacts_of(self, conn: AsyncConnection, contact_ids: Seq[uuid.UUID],
                          workspace_id: uuid.UUID | None) -> dict[uuid.UUID, domain.Contact]:
        """The state of each of these contacts (of `workspace_id`, when given), in two or three
        statements however many: their streams, and for those an import created, the chunk
        event they begin in. A contact with neither is absent."""
        streams = {stream_id("contact", contact_id): contact_id for contact_id in contact_ids}
        logs = await self.runtime.store.read_streams(conn, list(streams))
        origins = await self.runtime.store.read_origins(conn, list(streams))
        states = {}
        for stream, contact_id in streams.items():
            own, origin = logs.get(stream, []), origins.get(stream)
            first = origin or (own[0] if own else None)
            if first is None or workspace_id not in (None, first.workspace_id):
                continue
            imported = None if origin is None else domain.imported_contact(
                imported_row(origin, contact_id))
            states[contact_id] = domain.replay_contact([decode_event(e) for e in own], imported)
        return states

    async def _transaction(self, work, lost_race: tuple[str, str | None] = (
            "changed by someone else meanwhile; retry", None)):
        """Run `work(conn)` in a transaction; refusals become 409 answers. A lost race (another
        writer appended to a stream first: an email recorded while a rep stops the enrollment)
        is decided again on the new state, a few times, before it is answered as 409."""
        for attempt in range(_DECIDE_AGAIN):
            try:
                async with self.runtime.engine.begin() as conn:
                    return await work(conn)
            except domain.Unsendable as refused:
                raise Rejected(422, str(refused), refused.field) from None
            except domain.Refused as refused:
                raise Rejected(409, str(refused), refused.field) from None
            except ConcurrencyConflict:
                if attempt == _DECIDE_AGAIN - 1:
                    raise Rejected(409, *lost_race) from None
            except IntegrityError as error:
                if "contacts_email" in str(error.orig):
                    raise Rejected(409, "another contact has this email", "email") from None
                raise

    # --- sequences --------------------------------------------------------------------------

    async def create_sequence(self, command: CreateSequence) -> Created:
        event = SequenceCreated(sequence_id=uuid.uuid4(),
                                **command.model_dump(exclude={"workspace_id"}))

        async def work(conn):
            workspace, _ = await self._workspace_calendar(conn, command.workspace_id)
            domain.require_sending_days(command, workspace, self._today(command.timezone))
            await self.record(conn, [Append(event.stream_id(), 0, [event])],
                              Causation.new(command.workspace_id))
        await self._transaction(work)
        return Created(id=event.sequence_id)

    async def change_settings(self, command: ChangeSequenceSettings) -> Created:
        async def work(conn):
            state, stream = await self.load_sequence(conn, command.sequence_id,
                                                     command.workspace_id)
            workspace, _ = await self._workspace_calendar(conn, command.workspace_id)
            changes = command.changes.model_dump(exclude_none=True)
            events = domain.change_settings(state, changes, workspace,
                                            self._today(state.settings.timezone))
            await self.record(conn, [Append(stream, state.version, events)],
                              Causation.new(command.workspace_id))
        await self._transaction(work)
        return Created(id=command.sequence_id)

    def _today(self, zone: str):
        return self.runtime.clock.now().astimezone(ZoneInfo(zone)).date()

    async def _workspace_calendar(self, conn, workspace_id: uuid.UUID):
        return await self.load(conn, "calendar", workspace_id, domain.workspace_calendar)

    async def set_workspace_calendar(self, command: SetWorkspaceCalendar) -> Created:
        """The workspace's default holidays, skip dates and send window; refused when they would
        leave one of its sequences no sending day, or (409) when `expected_version` is given and
        the calendar is at another version."""
        async def work(conn):
            state, stream = await self._workspace_calendar(conn, command.workspace_id)
            head = (await conn.execute(_STREAM_HEAD, {"stream": stream})).first()
            version = head.version if head else 0
            if command.expected_version not in (None, version):
                raise domain.Refused(f"the calendar changed meanwhile (version {version}, not"
                                     f" {command.expected_version}): read it again and retry",
                                     "expected_version")
            event = WorkspaceCalendarChanged(workspace_id=command.workspace_id,
                                             holidays=command.holidays,
                                             skip_dates=command.skip_dates,
                                             send_window=command.send_window)
            for sequence_id in await self._sequence_ids(conn, command.workspace_id):
                sequence, _ = await self.load_sequence(conn, sequence_id)
                try:
                    domain.require_sending_days(sequence.settings, event,
                                                self._today(sequence.settings.timezone))
                except domain.Unsendable as refused:
                    field = "skip_dates" if command.skip_dates else "holidays"
                    raise domain.Unsendable(f"sequence {sequence.settings.name!r}: {refused}",
                                            field) from None
            await self.record(conn, [Append(stream, version, [event])],
                              Causation.new(command.workspace_id))
        # a lost race is decided again: with an expected version that is a 409 (the caller
        # merges and retries), without one the last writer wins
        await self._transaction(work, ("the calendar changed meanwhile: read it again and retry",
                                       "expected_version"))
        return Created(id=command.workspace_id)

    async def get_workspace_calendar(self, query: GetWorkspaceCalendar) -> WorkspaceCalendarView:
        # the state and its version from one read of the stream: read apart, a change between
        # them gave an older calendar at the newer version, and an editor merging into it lost
        # the change it did not see
        async with self.runtime.engine.connect() as conn:
            envelopes = await self.runtime.store.read_stream(
                conn, stream_id("calendar", query.workspace_id))
        state = domain.replay([decode_event(e) for e in envelopes], domain.workspace_calendar)
        return WorkspaceCalendarView(holidays=state.holidays if state else None,
                                     skip_dates=state.skip_dates if state else [],
                                     send_window=state.send_window if state else None,
                                     version=envelopes[-1].version if envelopes else 0)

    async def _sequence_ids(self, conn, workspace_id: uuid.UUID) -> list[uuid.UUID]:
        rows = await conn.execute(
            text("SELECT sequence_id FROM enrollment.sequences WHERE workspace_id = :ws"
                 " AND state <> 'archived'"), {"ws": workspace_id})
        return [row.sequence_id for row in rows]

    async def change_steps(self, command: ChangeSequenceSteps) -> Created:
        async def work(conn):
            state, stream = await self.load_sequence(conn, command.sequence_id,
                                                     command.workspace_id)
            events = domain.change_steps(state, command.steps)
            cause = Causation.new(command.workspace_id)
            await self.record(conn, [Append(stream, state.version, events)], cause)
            if events:
                await self._complete_those_with_nothing_left(conn, state.sequence_id,
                                                             command.steps, cause)
        await self._transaction(work)
        return Created(id=command.sequence_id)

    def sequence_decision(self, decide):
        """A command handler for pause, resume or archive."""
        async def handle(command) -> Created:
            async def work(conn):
                state, stream = await self.load_sequence(conn, command.sequence_id,
                                                         command.workspace_id)
                events = decide(state, self.runtime.clock.now())
                await self.record(conn, [Append(stream, state.version, events)],
                                  Causation.new(command.workspace_id))
            await self._transaction(work)
            return Created(id=command.sequence_id)
        return handle

    async def _complete_those_with_nothing_left(self, conn, sequence_id, steps, cause) -> None:
        now = self.runtime.clock.now()
        appends = []
        for enrollment_id in await self.active_enrollments(conn, sequence_id=sequence_id):
            state, stream = await self.load(conn, "enrollment", enrollment_id, domain.evolve)
            appends.append(Append(stream, state.version,
                                  domain.complete_if_nothing_left(state, steps, now)))
        await self.record(conn, appends, cause)

    async def active_enrollments(self, conn, **where) -> list[uuid.UUID]:
        [(column, value)] = where.items()
        rows = await conn.execute(
            text(f"SELECT enrollment_id FROM enrollment.enrollments"
                 f" WHERE {column} = :value AND status = 'active'"),
            {"value": value},
        )
        return [row.enrollment_id for row in rows]

    # --- contacts ---------------------------------------------------------------------------

    async def create_contact(self, command: CreateContact) -> Created:
        event = ContactCreated(contact_id=uuid.uuid4(),
                               **command.model_dump(exclude={"workspace_id"}))

        async def work(conn):
            await self._refuse_taken_email(conn, command.workspace_id, command.email)
            await self.record(conn, [Append(event.stream_id(), 0, [event])],
                              Causation.new(command.workspace_id))
        await self._transaction(work)
        return Created(id=event.contact_id)

    async def update_contact(self, command: UpdateContact) -> Created:
        async def work(conn):
            state, stream = await self._contact(conn, command.contact_id, command.workspace_id)
            changes = command.changes.model_dump(exclude_none=True, mode="json")
            if "email" in changes:
                await self._refuse_taken_email(conn, command.workspace_id, changes["email"],
                                               but=command.contact_id)
            events = domain.update_contact(state, changes)
            cause = Causation.new(command.workspace_id)
            await self.record(conn, [Append(stream, state.version, events)], cause)
            if events and "timezone" in events[0].changes:
                await self._zone_changed(conn, command.contact_id,
                                         events[0].changes["timezone"] or None, cause)
        await self._transaction(work)
        return Created(id=command.contact_id)

    async def _zone_changed(self, conn, contact_id, zone: str | None, cause: Causation) -> None:
        """Every open enrollment of the contact learns the new zone (the scheduler re-plans)."""
        now = self.runtime.clock.now()
        appends = []
        for enrollment_id in await self.active_enrollments(conn, contact_id=contact_id):
            state, stream = await self.load(conn, "enrollment", enrollment_id, domain.evolve)
            appends.append(Append(stream, state.version, domain.zone_changed(state, zone, now)))
        await self.record(conn, appends, cause)

    async def _refuse_taken_email(self, conn, workspace_id: uuid.UUID, email: str,
                                  but: uuid.UUID | None = None) -> None:
        taken = (await conn.execute(
            text("SELECT contact_id FROM enrollment.contacts WHERE workspace_id = :ws"
                 " AND lower(email) = lower(:email) AND NOT deleted"),
            {"ws": workspace_id, "email": email})).first()
        if taken is not None and taken.contact_id != but:
            raise Rejected(409, f"contact {taken.contact_id} already has this email", "email")

    async def delete_contact(self, command: DeleteContact) -> Created:
        return await self._end_contact(command, domain.delete_contact, said(CONTACT_DELETED))

    async def opt_out_contact(self, command: OptOutContact) -> Created:
        def decide(state, at):
            return domain.opt_out(state, at, command.source, command.reason)
        return await self._end_contact(command, decide, said(CONTACT_OPTED_OUT))

    async def _end_contact(self, command: DeleteContact | OptOutContact, decide,
                           stop_reason: Text) -> Created:
        """Delete or opt out: the contact's event, and every active enrollment of theirs stops."""
        contact_id = command.contact_id

        async def work(conn):
            state, stream = await self._contact(conn, contact_id, command.workspace_id)
            now = self.runtime.clock.now()
            cause = Causation.new(command.workspace_id)
            await self.record(conn, [Append(stream, state.version, decide(state, now))], cause)
            active = await self.active_enrollments(conn, contact_id=contact_id)
            await self.stop_enrollments(conn, active, stop_reason, cause)
        await self._transaction(work)
        return Created(id=contact_id)

    async def import_contacts(self, command: ImportContacts) -> ImportResult:
        """Upsert by email: new addresses are created (a `ContactsImported` for the chunk),
        known ones updated where they differ."""
        async def work(conn):
            emails = [row.email.lower() for row in command.rows]
            known = dict((await conn.execute(
                text("SELECT lower(email), contact_id FROM enrollment.contacts"
                     " WHERE workspace_id = :ws AND lower(email) = ANY(:emails) AND NOT deleted"),
                {"ws": command.workspace_id, "emails": emails})).all())
            # the known contacts' states in a few statements, not a few each (a repeated import)
            states = await self.contacts_of(conn, list(known.values()), None)
            created, updates, counts = domain.import_contacts(
                # only the columns the file has: an empty or missing cell erases nothing
                [row.model_dump(mode="json", exclude_unset=True) for row in command.rows],
                {email: states[contact_id] for email, contact_id in known.items()},
                uuid.uuid4)
            appends = [Append(event.stream_id(), 0, [event]) for event in created]
            appends += [Append(stream_id("contact", state.contact_id), state.version, events)
                        for state, events in updates]
            await self.record(conn, appends, Causation.new(command.workspace_id))
            return ImportResult(**counts)
        return await self._transaction(work)

    # --- enrollments ------------------------------------------------------------------------

    async def enroll_contact(self, command: EnrollContact) -> Created:
        async def work(conn):
            sequence, _ = await self.load_sequence(conn, command.sequence_id, command.workspace_id)
            domain.require_live(sequence)
            candidates = await self._candidates(conn, command.workspace_id, command.sequence_id,
                                                "c.contact_id = :contact_id",
                                                {"contact_id": command.contact_id})
            if not candidates:
                raise Rejected(404, f"no such contact: {command.contact_id}", "contact_id")
            [candidate] = candidates
            verdict = _admit(candidate, command.reenroll)
            if verdict is not Admission.enroll:
                raise Rejected(409, _REFUSALS[verdict], "contact_id")
            event = self._enrolled(command.sequence_id, candidate)
            await self.record(conn, [Append(event.stream_id(), 0, [event])],
                              Causation.new(command.workspace_id))
            return Created(id=event.enrollment_id)
        # two identical requests at once derive the same enrollment id: one of them loses
        return await self._transaction(
            work, lost_race=(_REFUSALS[Admission.skipped_active], "contact_id"))

    async def enroll_segment(self, command: EnrollSegment) -> BulkEnrollmentResult:
        """Everyone in the segment at once, in one transaction: all of them or none. Written a
        chunk at a time as the segment is read: holding every event until the end took 3.7 KB
        an enrollment (370 MB for 100,000)."""
        async def work(conn):
            sequence, _ = await self.load_sequence(conn, command.sequence_id, command.workspace_id)
            domain.require_live(sequence)
            where, params = _segment_filter(command.segment)
            counts = {verdict: 0 for verdict in Admission}
            cause = Causation.new(command.workspace_id)
            appends = []
            for candidate in await self._candidates(conn, command.workspace_id,
                                                    command.sequence_id, where, params):
                verdict = _admit(candidate, command.reenroll)
                counts[verdict] += 1
                if verdict is Admission.enroll:
                    event = self._enrolled(command.sequence_id, candidate)
                    appends.append(Append(event.stream_id(), 0, [event]))
                if len(appends) == _APPEND_CHUNK:
                    await self.record(conn, appends, cause)
                    appends = []
            await self.record(conn, appends, cause)
            return _bulk_result(counts)
        return await self._transaction(work)

    async def preview_segment(self, query: PreviewSegment) -> BulkEnrollmentResult:
        """The counts `enroll_segment` would answer now, from the same candidates and the same
        admission rule, without writing anything."""
        async def work(conn):
            sequence, _ = await self.load_sequence(conn, query.sequence_id, query.workspace_id)
            domain.require_live(sequence)
            where, params = _segment_filter(query.segment)
            counts = {verdict: 0 for verdict in Admission}
            for candidate in await self._candidates(conn, query.workspace_id, query.sequence_id,
                                                    where, params):
                counts[_admit(candidate, query.reenroll)] += 1
            return _bulk_result(counts)
        return await self._transaction(work)

    async def _candidates(self, conn, workspace_id, sequence_id, where: str, params: dict) -> list:
        """The workspace's contacts matching `where`, each with its last enrollment in this
        sequence."""
        rows = await conn.execute(
            text(
                "SELECT c.contact_id, c.email, c.timezone, c.opted_out, last.status AS last_status,"
                " last.email AS last_email, coalesce(last.attempt, 0) AS last_attempt,"
                f" {_SUPPRESSED} AS suppressed"
                " FROM enrollment.contacts c LEFT JOIN LATERAL ("
                "   SELECT status, email, attempt FROM enrollment.enrollments e"
                "   WHERE e.contact_id = c.contact_id AND e.sequence_id = :sequence_id"
                "   ORDER BY attempt DESC LIMIT 1) last ON true"
                " WHERE c.workspace_id = :workspace_id AND NOT c.deleted"
                f" AND {where} ORDER BY c.created_at, c.contact_id"
            ),
            {"workspace_id": workspace_id, "sequence_id": sequence_id, **params},
        )
        return rows.all()

    def _enrolled(self, sequence_id: uuid.UUID, candidate) -> ContactEnrolled:
        attempt = candidate.last_attempt + 1
        return ContactEnrolled(
            enrollment_id=domain.enrollment_id_for(sequence_id, candidate.contact_id, attempt),
            sequence_id=sequence_id,
            contact_id=candidate.contact_id,
            enrolled_at=self.runtime.clock.now(),
            email=candidate.email,
            attempt=attempt,
            contact_timezone=candidate.timezone,
        )

    async def stop_enrollment(self, command: StopEnrollment) -> Created:
        async def work(conn):
            state, _ = await self.load(conn, "enrollment", command.enrollment_id, domain.evolve,
                                       command.workspace_id)
            if state is None:
                raise Rejected(404, f"no such enrollment: {command.enrollment_id}",
                               "enrollment_id")
            await self.stop_enrollments(conn, [command.enrollment_id],
                                        command.reason or said(STOPPED_BY_HAND),
                                        Causation.new(command.workspace_id))
        await self._transaction(work)
        return Created(id=command.enrollment_id)

    async def stop_enrollments(self, conn, enrollment_ids, reason: Text | str,
                               cause: Causation) -> None:
        """Stops them, for one of our reasons (a Text) or a person's own words."""
        now = self.runtime.clock.now()
        text = reason if isinstance(reason, Text) else None
        appends = []
        for enrollment_id in enrollment_ids:
            state, stream = await self.load(conn, "enrollment", enrollment_id, domain.evolve)
            stop = EnrollmentStopped(enrollment_id=enrollment_id, stopped_at=now,
                                     reason=text.english() if text else reason, reason_text=text)
            appends.append(Append(stream, state.version, domain.end(state, stop)))
        await self.record(conn, appends, cause)

    # --- a person's decisions on an enrollment ----------------------------------------------

    async def retry_enrollment(self, command: RetryEnrollment) -> Created:
        """Try the held step again, now (the scheduler fires it once more)."""
        return await self._decide_on_enrollment(command, domain.retry)

    async def _decide_on_enrollment(self, command: RetryEnrollment | ResumeEnrollment,
                                    decide) -> Created:
        """A person's decision on one enrollment of their workspace: `decide(state, now)`."""
        async def work(conn):
            state, stream = await self.load(conn, "enrollment", command.enrollment_id,
                                            domain.evolve, command.workspace_id)
            if state is None:
                raise Rejected(404, f"no such enrollment: {command.enrollment_id}",
                               "enrollment_id")
            events = decide(state, self.runtime.clock.now())
            await self.record(conn, [Append(stream, state.version, events)],
                              Causation.new(command.workspace_id))
        await self._transaction(work)
        return Created(id=command.enrollment_id)

    async def complete_task(self, command: CompleteTask) -> Created:
        """Done or skipped, the enrollment moves on to its next step."""
        async def work(conn):
            task_events = await self.runtime.store.read_stream(conn, stream_id("task",
                                                                               command.task_id))
            if not task_events or task_events[0].workspace_id != command.workspace_id:
                raise Rejected(404, f"no such task: {command.task_id}", "task_id")
            if len(task_events) > 1:
                raise Rejected(409, "the task was already completed", "task_id")
            task = decode_event(task_events[0])
            state, stream = await self.load(conn, "enrollment", task.enrollment_id, domain.evolve)
            sequence, _ = await self.load_sequence(conn, task.sequence_id)
            step = next((s for s in sequence.steps if s.step_id == task.step_id), None)
            now = self.runtime.clock.now()
            completed = TaskCompleted(task_id=task.task_id, enrollment_id=task.enrollment_id,
                                      step_id=task.step_id, outcome=command.outcome,
                                      note=command.note, completed_at=now)
            moved = domain.complete_step(state, step, task.step_index, now, sequence.steps) \
                if step is not None else []
            await self.record(conn, [Append(completed.stream_id(), 1, [completed]),
                                      Append(stream, state.version, moved)],
                              Causation.new(command.workspace_id))
        await self._transaction(work)
        return Created(id=command.task_id)

    async def resume_enrollment(self, command: ResumeEnrollment) -> Created:
        """End a pause now: the scheduler plans the next step from this moment."""
        return await self._decide_on_enrollment(
            command, lambda state, now: domain.resume_enrollment(state, now, command.by))

    # --- the suppression list ---------------------------------------------------------------

    async def add_suppression(self, conn, workspace_id, event: AddressSuppressed,
                              cause: Causation) -> bool:
        stream = event.stream_id()
        envelopes = await self.runtime.store.read_stream(conn, stream)
        events = domain.suppress(domain.suppression_active(
            decode_event(e) for e in envelopes), event)
        await self.record(conn, [Append(stream, len(envelopes), events)], cause)
        return bool(events)

    async def add_suppressions(self, command: AddSuppressions) -> SuppressionResult:
        async def work(conn):
            now, added = self.runtime.clock.now(), 0
            cause = Causation.new(command.workspace_id)
            for entry in dict.fromkeys(command.entries):
                kind, value = suppression_target(entry.value)
                added += await self.add_suppression(conn, command.workspace_id, AddressSuppressed(
                    suppression_id=suppression_id_for(command.workspace_id, value), value=value,
                    kind=kind, reason=command.reason, note=entry.note, added_at=now), cause)
            return SuppressionResult(added=added, already=len(command.entries) - added)
        return await self._transaction(work)

    async def remove_suppression(self, command: RemoveSuppression) -> Created:
        suppression_id = suppression_id_for(command.workspace_id, command.value)

        async def work(conn):
            removed = SuppressionRemoved(suppression_id=suppression_id, value=command.value,
                                         removed_at=self.runtime.clock.now())
            envelopes = await self.runtime.store.read_stream(conn, removed.stream_id())
            try:
                events = domain.unsuppress(domain.suppression_active(
                    decode_event(e) for e in envelopes), removed)
            except domain.Refused as refused:
                raise Rejected(404, str(refused), "value") from None
            await self.record(conn, [Append(removed.stream_id(), len(envelopes), events)],
                              Causation.new(command.workspace_id))
        await self._transaction(work)
        return Created(id=suppression_id)


_REFUSALS = {verdict: ENROLLMENT_REFUSALS[verdict.value] for verdict in Admission
             if verdict is not Admission.enroll}


def _bulk_result(counts: dict[Admission, int]) -> BulkEnrollmentResult:
    return BulkEnrollmentResult(
        enrolled=counts[Admission.enroll],
        skipped_active=counts[Admission.skipped_active],
        skipped_ended=counts[Admission.skipped_ended],
        excluded_opted_out=counts[Admission.excluded_opted_out],
        refused_bounced=counts[Admission.refused_bounced],
        excluded_suppressed=counts[Admission.excluded_suppressed],
    )


def _admit(candidate, reenroll: bool) -> Admission:
    return domain.admission(candidate.opted_out, candidate.email, candidate.last_status,
                            candidate.last_email, reenroll, candidate.suppressed)


# a contact's address or its domain on the workspace's suppression list
_SUPPRESSED = ("EXISTS (SELECT 1 FROM enrollment.suppressions x"
               " WHERE x.workspace_id = c.workspace_id"
               " AND x.value IN (lower(c.email), split_part(lower(c.email), '@', 2)))")

def _segment_filter(segment: Segment) -> tuple[str, dict]:
    clauses, params = ["true"], {}
    if segment.status is not None:
        clauses.append("c.status = :status")
        params["status"] = segment.status
    if segment.tag is not None:
        clauses.append(":tag = ANY(c.tags)")
        params["tag"] = segment.tag
    if segment.list is not None:
        clauses.append(":list = ANY(c.lists)")
        params["list"] = segment.list
    return " AND ".join(clauses), params
