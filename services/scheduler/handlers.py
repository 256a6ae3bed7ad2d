"""Scheduler handlers: keep each enrollment's next step planned from the events, fire it when due.

Planning is one function, `_replan_all`, used whenever something that decides the next step
changes: an enrollment starts, a step completes, the steps are edited, a paused sequence resumes.
It plans any number of enrollments in a fixed number of statements (one read, the pure
`domain.next_planned` for each, two writes, one append): enrollments and step completions come
in runs (a bulk enrollment, a send time's batch of emails), and each is handled as a set.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.base import EventEnvelope, decode_event, stream_id
from contracts.events import (
    ContactCreated,
    imported_row,
    ContactEnrolled,
    ContactUpdated,
    EnrollmentContactZoneChanged,
    EmailDeferred,
    EnrollmentNeedsAttention,
    EnrollmentRetried,
    EnrollmentBounced,
    EnrollmentCompleted,
    EnrollmentReplied,
    EnrollmentPaused,
    EnrollmentResumed,
    EnrollmentStepCompleted,
    EnrollmentStopped,
    SequenceArchived,
    SequenceCreated,
    SequencePaused,
    SequenceResumed,
    SequenceSettingsChanged,
    SequenceStepsChanged,
    StepDue,
    StepScheduled,
    WorkspaceCalendarChanged,
)
from contracts.commands import PreviewSchedule
from contracts.texts import Text, said
from contracts.values import Step, steps_json
from contracts.views import ScheduledStep, SchedulePreview
from sequences import metrics
from sequences.bootstrap import Runtime
from sequences.eventlog.store import ANY_VERSION, Append, Causation
from sequences.faults import crash_point
from sequences.i18n import N_
from sequences.messaging.consumer import Delivery, HandBack, NotReady, Subscription, waves
from sequences.messaging.rpc import Rejected
from sequences.tracing import (
    TRACEPARENT,
    TRACESTATE,
    context_from,
    current_trace_headers,
    tracer,
)
from sequences.calendars import local_instant, next_send
from services.scheduler import domain

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

# the note of a step fired again after a hold ("retried" in the API, as before)
RETRIED = said(N_("tried again after it was held"))

# where each enrollment stands, for planning its next step (`domain.next_planned`)
_WHERE_THEY_STAND = """
    SELECT e.enrollment_id, e.completed, e.anchor_at, e.active, e.contact_timezone,
           e.paused_until, sequence_id, s.timezone, s.send_policy,
           s.steps, s.state, s.holidays, s.zone_mode, w.holidays AS workspace_holidays,
           w.skip_dates,
           (SELECT d.due_at FROM scheduler.due_steps d WHERE d.enrollment_id = e.enrollment_id
            AND d.state IN ('pending', 'held') LIMIT 1) AS planned_at
    FROM scheduler.enrollments e JOIN scheduler.sequences s USING (sequence_id)
    LEFT JOIN scheduler.workspace_calendars w ON w.workspace_id = s.workspace_id
    WHERE e.enrollment_id = ANY(%(ids)b::uuid[])
    ORDER BY e.enrollment_id
    -- A pause or an edit (which update the sequence row) and a step completing (another
    -- stream, maybe another replica) must not plan from each other's stale view: whoever
    -- plans second waits for the first and reads what it wrote.
    FOR UPDATE OF e FOR SHARE OF s
"""
# the pending or held steps of these enrollments that are not their next one any more
_DROP_SUPERSEDED = """
    DELETE FROM scheduler.due_steps d USING unnest(%(ids)b::uuid[], %(keeps)s::uuid[]) AS v(id, keep)
    WHERE d.enrollment_id = v.id AND d.state IN ('pending', 'held')
      AND d.step_id IS DISTINCT FROM v.keep
"""
# the plans that changed come back (those of the enrollment that were already so do not)
_PLAN = """
    INSERT INTO scheduler.due_steps (enrollment_id, step_id, step_index, channel, due_at, state)
    SELECT * FROM unnest(%(ids)b::uuid[], %(step_ids)b::uuid[], %(step_indexes)b::integer[],
                         %(channels)b::text[], %(due_ats)b::timestamptz[], %(states)b::text[])
    ON CONFLICT (enrollment_id, step_id) DO UPDATE
        SET step_index = EXCLUDED.step_index, channel = EXCLUDED.channel,
            due_at = EXCLUDED.due_at, state = EXCLUDED.state
        WHERE scheduler.due_steps.state IN ('pending', 'held')
          AND (scheduler.due_steps.due_at, scheduler.due_steps.state, scheduler.due_steps.step_index)
              IS DISTINCT FROM (EXCLUDED.due_at, EXCLUDED.state, EXCLUDED.step_index)
    RETURNING enrollment_id
"""
_ENROLL = """
    INSERT INTO scheduler.enrollments (enrollment_id, workspace_id, sequence_id, contact_id,
        anchor_at, correlation_id, causation_id, traceparent, contact_timezone)
    SELECT v.* FROM unnest(%(ids)b::uuid[], %(workspaces)b::uuid[], %(sequences)b::uuid[],
        %(contacts)b::uuid[], %(ats)b::timestamptz[], %(correlations)b::uuid[],
        %(causations)b::uuid[], %(traceparents)s::text[], %(zones)s::text[])
        AS v(enrollment_id, workspace_id, sequence_id, contact_id, anchor_at, correlation_id,
             causation_id, traceparent, contact_timezone)
    -- an enrollment of a sequence not seen yet is handed back, and written when it comes again
    WHERE EXISTS (SELECT 1 FROM scheduler.sequences s WHERE s.sequence_id = v.sequence_id)
    RETURNING enrollment_id
"""
# the next wait counts from the completion
_COMPLETE_STEPS = """
    UPDATE scheduler.enrollments e SET completed = array_append(e.completed, v.step_id),
        anchor_at = v.at, paused_until = NULL, correlation_id = v.correlation_id,
        causation_id = v.causation_id, traceparent = v.traceparent
    FROM unnest(%(ids)b::uuid[], %(step_ids)b::uuid[], %(ats)b::timestamptz[],
                %(correlations)b::uuid[], %(causations)b::uuid[], %(traceparents)s::text[])
        AS v(id, step_id, at, correlation_id, causation_id, traceparent)
    WHERE e.enrollment_id = v.id
    RETURNING e.enrollment_id
"""
_END = "UPDATE scheduler.enrollments SET active = false WHERE enrollment_id = ANY(%(ids)b::uuid[])"
_CANCEL = (
    "UPDATE scheduler.due_steps SET state = 'cancelled'"
    " WHERE enrollment_id = ANY(%(ids)b::uuid[]) AND state IN ('pending', 'held')"
)
_CLAIM_DUE = text(
    """
    SELECT d.enrollment_id, d.step_id, d.step_index, d.channel, d.due_at, e.sequence_id,
           e.contact_id, e.workspace_id, e.correlation_id, e.causation_id, e.traceparent
    FROM scheduler.due_steps d JOIN scheduler.enrollments e USING (enrollment_id)
    WHERE d.state = 'pending' AND d.due_at <= :now
    ORDER BY d.due_at
    LIMIT :limit
    FOR UPDATE OF d SKIP LOCKED
    """
)
_MARK_FIRED = text(
    "UPDATE scheduler.due_steps SET state = 'fired', fired_at = :now"
    " WHERE (enrollment_id, step_id) IN"
    " (SELECT * FROM unnest(CAST(:enrollment_ids AS uuid[]), CAST(:step_ids AS uuid[])))"
)


class SchedulerHandlers:
    def __init__(self, runtime: Runtime, batch_size: int = 500):
        self.runtime = runtime
        self.batch_size = batch_size
        self.fired = 0

    # --- sequences --------------------------------------------------------------------------

    async def on_sequence_created(self, event: SequenceCreated, d: Delivery) -> None:
        await d.conn.execute(
            text(
                "INSERT INTO scheduler.sequences (sequence_id, workspace_id, timezone,"
                " send_policy, steps, holidays, zone_mode)"
                " VALUES (:id, :ws, :tz, CAST(:policy AS jsonb), CAST(:steps AS jsonb),"
                " CAST(:holidays AS jsonb), :zone_mode)"
            ),
            {"id": event.sequence_id, "ws": d.envelope.workspace_id, "tz": event.timezone,
             "policy": event.send_policy.model_dump_json(), "steps": steps_json(event.steps),
             "holidays": domain._json(event.holidays), "zone_mode": event.zone_mode},
        )

    async def on_steps_changed(self, event: SequenceStepsChanged, d: Delivery) -> None:
        """Re-plan the pending step of every enrollee; what already fired is left alone."""
        await d.conn.execute(
            text("UPDATE scheduler.sequences SET steps = CAST(:steps AS jsonb)"
                 " WHERE sequence_id = :id"),
            {"id": event.sequence_id, "steps": steps_json(event.steps)},
        )
        await self._replan_all(d.conn, [Replan(enrollment_id, d.causation) for enrollment_id
                                        in await self._active_enrollments(d.conn, event.sequence_id)])

    async def on_settings_changed(self, event: SequenceSettingsChanged, d: Delivery) -> None:
        """A new window, zone, holiday choice or zone mode re-plans every pending step by the new
        rules, never earlier than it was planned when its new moment already passed."""
        settings = event.settings
        await d.conn.execute(
            text("UPDATE scheduler.sequences SET timezone = :tz, send_policy = CAST(:policy AS"
                 " jsonb), holidays = CAST(:holidays AS jsonb), zone_mode = :zone_mode"
                 " WHERE sequence_id = :id"),
            {"id": event.sequence_id, "tz": settings.timezone,
             "policy": settings.send_policy.model_dump_json(),
             "holidays": domain._json(settings.holidays), "zone_mode": settings.zone_mode},
        )
        await self._replan_all(d.conn, [
            Replan(enrollment_id, d.causation, edited_at=d.envelope.occurred_at)
            for enrollment_id in await self._active_enrollments(d.conn, event.sequence_id)])

    async def on_workspace_calendar_changed(self, event: WorkspaceCalendarChanged,
                                            d: Delivery) -> None:
        """New default holidays or skip dates: the workspace's pending steps are re-planned."""
        await d.conn.execute(
            text("INSERT INTO scheduler.workspace_calendars (workspace_id, holidays, skip_dates)"
                 " VALUES (:ws, CAST(:holidays AS jsonb), CAST(:skips AS jsonb))"
                 " ON CONFLICT (workspace_id) DO UPDATE SET holidays = EXCLUDED.holidays,"
                 " skip_dates = EXCLUDED.skip_dates"),
            {"ws": event.workspace_id, "holidays": domain._json(event.holidays),
             "skips": domain._json(event.skip_dates)},
        )
        rows = await d.conn.execute(
            text("SELECT enrollment_id FROM scheduler.enrollments WHERE workspace_id = :ws"
                 " AND active"), {"ws": event.workspace_id})
        await self._replan_all(d.conn, [
            Replan(row.enrollment_id, d.causation, edited_at=d.envelope.occurred_at)
            for row in rows.all()])

    async def on_contact_zone_changed(self, event: EnrollmentContactZoneChanged,
                                      d: Delivery) -> None:
        await d.conn.execute(
            text("UPDATE scheduler.enrollments SET contact_timezone = :tz"
                 " WHERE enrollment_id = :id"),
            {"id": event.enrollment_id, "tz": event.contact_timezone},
        )
        await self._replan(d, event.enrollment_id, edited_at=event.changed_at)

    async def on_sequence_paused(self, event: SequencePaused | SequenceArchived, d: Delivery):
        """Every enrollee's pending step is held (re-planned as held, so the hold is announced)."""
        state = "paused" if isinstance(event, SequencePaused) else "archived"
        await d.conn.execute(
            text("UPDATE scheduler.sequences SET state = :state WHERE sequence_id = :id"),
            {"id": event.sequence_id, "state": state},
        )
        await self._replan_all(d.conn, [Replan(enrollment_id, d.causation) for enrollment_id
                                        in await self._active_enrollments(d.conn, event.sequence_id)])

    async def on_sequence_resumed(self, event: SequenceResumed, d: Delivery) -> None:
        """Held steps go on; those whose moment passed during the pause are re-planned from the
        resume moment by the same rules (the next send time), not fired all at once."""
        await d.conn.execute(
            text("UPDATE scheduler.sequences SET state = 'live' WHERE sequence_id = :id"),
            {"id": event.sequence_id},
        )
        await self._replan_all(d.conn, [
            Replan(enrollment_id, d.causation, resumed_at=event.resumed_at)
            for enrollment_id in await self._active_enrollments(d.conn, event.sequence_id)])

    # --- enrollments ------------------------------------------------------------------------

    async def on_contacts_enrolled(self, run: list[EventEnvelope], conn) -> list[HandBack]:
        """Set-based: a run of enrollments is one insert, one read, one pure planning pass, two
        writes and one append, whatever its length."""
        async def write(wave: list[EventEnvelope]) -> list:
            events = [e.data for e in wave]
            rows = await conn.exec_driver_sql(_ENROLL, {
                "ids": [e["enrollment_id"] for e in events],
                "workspaces": [e.workspace_id for e in wave],
                "sequences": [e["sequence_id"] for e in events],
                "contacts": [e["contact_id"] for e in events],
                "ats": [e["enrolled_at"] for e in events],
                "zones": [e.get("contact_timezone") for e in events], **_causes(wave)})
            return [row.enrollment_id for row in rows]

        return await self._in_waves(conn, run, write)

    async def on_steps_completed(self, run: list[EventEnvelope], conn) -> list[HandBack]:
        """Set-based, as `on_contacts_enrolled`; the next wait counts from each completion."""
        async def write(wave: list[EventEnvelope]) -> list:
            events = [e.data for e in wave]
            rows = await conn.exec_driver_sql(_COMPLETE_STEPS, {
                "ids": [e["enrollment_id"] for e in events],
                "step_ids": [e["step_id"] for e in events],
                "ats": [e["completed_at"] for e in events], **_causes(wave)})
            return [row.enrollment_id for row in rows]

        return await self._in_waves(conn, run, write)

    async def _in_waves(self, conn, run: list[EventEnvelope], write) -> list[HandBack]:
        """Write each wave's events (`write` returns the enrollments it found) and plan their
        enrollments again; the events whose enrollment was not found are handed back, with
        the later ones of their enrollment."""
        backs, missing = [], set()
        for wave in waves(run):
            backs += [HandBack(e.event_id) for e in wave if e.stream_id in missing]
            wave = [e for e in wave if e.stream_id not in missing]
            found = set(await write(wave)) if wave else set()
            replans = []
            for envelope in wave:
                enrollment_id = uuid.UUID(envelope.data["enrollment_id"])
                if enrollment_id in found:
                    replans.append(Replan(enrollment_id, Causation.following(envelope)))
                else:
                    missing.add(envelope.stream_id)
                    backs.append(HandBack(envelope.event_id))
            if await self._replan_all(conn, replans):
                raise NotReady("an enrollment written in this transaction was not found")
        return backs

    async def on_enrollment_paused(self, event: EnrollmentPaused, d: Delivery) -> None:
        """The next step is not planned before `until` (the first send moment from then)."""
        await d.conn.execute(
            text("UPDATE scheduler.enrollments SET paused_until = :until"
                 " WHERE enrollment_id = :id"),
            {"id": event.enrollment_id, "until": event.until})
        await self._replan(d, event.enrollment_id)

    async def on_enrollment_resumed(self, event: EnrollmentResumed, d: Delivery) -> None:
        """Resumed early: the next step is planned again, from this moment when its own passed."""
        await d.conn.execute(
            text("UPDATE scheduler.enrollments SET paused_until = NULL WHERE enrollment_id = :id"),
            {"id": event.enrollment_id})
        await self._replan(d, event.enrollment_id, resumed_at=event.resumed_at)

    async def on_email_deferred(self, event: EmailDeferred, d: Delivery) -> None:
        """A mailbox limit moved the step: it fires again at `until`, or when the window next
        opens after it (a minimum gap spreads a window's sends, never past its end)."""
        until = event.until
        where = (await d.conn.exec_driver_sql(_WHERE_THEY_STAND,
                                              {"ids": [event.enrollment_id]})).first()
        if where is not None:
            until, _ = next_send(until, domain.calendar_of(where))
        await self._refire(d, event.enrollment_id, event.step_id, until, event.reason,
                           event.reason_text)

    async def on_retried(self, event: EnrollmentRetried, d: Delivery) -> None:
        """Someone fixed what held the step: it fires again now."""
        await self._refire(d, event.enrollment_id, event.step_id, event.retried_at, "retried",
                           RETRIED)

    async def on_needs_attention(self, event: EnrollmentNeedsAttention, d: Delivery) -> None:
        """A held enrollment's planned step does not fire (a bounce from a mailbox holds the
        step after the one that went out); a retry fires it again."""
        await d.conn.execute(
            text("UPDATE scheduler.due_steps SET state = 'fired'"
                 " WHERE enrollment_id = :e AND step_id = :s AND state IN ('pending', 'held')"),
            {"e": event.enrollment_id, "s": event.step_id})

    async def _refire(self, d: Delivery, enrollment_id, step_id, at: datetime, reason: str,
                      reason_text: Text | None):
        row = (await d.conn.execute(
            text("UPDATE scheduler.due_steps SET state = 'pending', due_at = :at"
                 " WHERE enrollment_id = :e AND step_id = :s AND state = 'fired'"
                 " RETURNING step_index"),
            {"e": enrollment_id, "s": step_id, "at": at})).first()
        if row is not None:
            scheduled = StepScheduled(enrollment_id=enrollment_id, step_id=step_id,
                                      step_index=row.step_index, due_at=at, reason=reason,
                                      reason_text=reason_text)
            await self.runtime.store.append(
                d.conn, [Append(scheduled.stream_id(), ANY_VERSION, [scheduled])], d.causation)

    async def on_enrollments_ended(self, run: list[EventEnvelope], conn) -> None:
        """Done, replied, bounced or stopped: whatever was pending never fires."""
        ids = [e.data["enrollment_id"] for e in run]
        await conn.exec_driver_sql(_END, {"ids": ids})
        await conn.exec_driver_sql(_CANCEL, {"ids": ids})

    async def _active_enrollments(self, conn: AsyncConnection, sequence_id) -> list:
        rows = await conn.execute(
            text("SELECT enrollment_id FROM scheduler.enrollments"
                 " WHERE sequence_id = :id AND active"),
            {"id": sequence_id},
        )
        return [row.enrollment_id for row in rows]

    async def _replan(self, d: Delivery, enrollment_id, resumed_at: datetime | None = None,
                      edited_at: datetime | None = None) -> None:
        """One enrollment's next step planned again (`_replan_all`)."""
        if await self._replan_all(d.conn, [Replan(enrollment_id, d.causation, resumed_at,
                                                  edited_at)]):
            raise NotReady(f"enrollment {enrollment_id} or its sequence not seen yet")

    async def _replan_all(self, conn: AsyncConnection, replans: list[Replan]) -> list:
        """Plan each enrollment's next step from where it stands, in one read, one pure pass and
        two writes; announce each plan that changed (StepScheduled), in one append. Returns
        the enrollments not found (or whose sequence was not). One `Replan` per enrollment."""
        if not replans:
            return []
        rows = await conn.exec_driver_sql(
            _WHERE_THEY_STAND, {"ids": [r.enrollment_id for r in replans]})
        standing = {row.enrollment_id: row for row in rows}
        steps = _StepsOf()
        planned = [(r, domain.next_planned(where, steps(where), r.resumed_at, r.edited_at))
                   for r in replans if (where := standing.get(r.enrollment_id)) is not None]
        if planned:
            await conn.exec_driver_sql(_DROP_SUPERSEDED, {
                "ids": [r.enrollment_id for r, _ in planned],
                "keeps": [p.step.step_id if p else None for _, p in planned]})
        plans = [(r, p) for r, p in planned if p is not None]
        if plans:
            changed = {row.enrollment_id for row in await conn.exec_driver_sql(_PLAN, {
                "ids": [r.enrollment_id for r, _ in plans],
                "step_ids": [p.step.step_id for _, p in plans],
                "step_indexes": [p.step_index for _, p in plans],
                "channels": [str(p.step.channel) for _, p in plans],
                "due_ats": [p.planned.at for _, p in plans],
                "states": ["held" if p.held else "pending" for _, p in plans]})}
            appends = [_scheduled(r, p) for r, p in plans if r.enrollment_id in changed]
            if appends:
                await self.runtime.store.append(conn, appends, appends[0].causation)
        return [r.enrollment_id for r in replans if r.enrollment_id not in standing]

    # --- queries ----------------------------------------------------------------------------

    async def preview_schedule(self, query: PreviewSchedule) -> SchedulePreview:
        """From the event log itself (not this service's tables), so a sequence saved a moment
        ago is answered before its events reached the scheduler."""
        sequence_stream = stream_id("sequence", query.sequence_id)
        calendar_stream = stream_id("calendar", query.workspace_id)
        contact_stream = (stream_id("contact", query.contact_id)
                          if query.contact_id is not None else None)
        origin = None
        async with self.runtime.engine.connect() as conn:  # the streams in one statement
            streams = await self.runtime.store.read_streams(
                conn, [s for s in (sequence_stream, calendar_stream, contact_stream) if s])
            if contact_stream:  # a contact an import created begins in its chunk's event
                origin = (await self.runtime.store.read_origins(
                    conn, [contact_stream])).get(contact_stream)
        sequence = _replayed_sequence(streams.get(sequence_stream, []), query)
        contact_zone = (_contact_zone(streams.get(contact_stream, []), origin, query)
                        if contact_stream else None)
        workspace = streams.get(calendar_stream)
        calendar_event = decode_event(workspace[-1]) if workspace else None
        settings, steps = sequence
        zone_name = domain.zone_of(settings["timezone"], settings["zone_mode"], contact_zone)
        calendar = domain.sequence_calendar(
            zone_name, settings["send_policy"], settings["holidays"],
            calendar_event.holidays if calendar_event else None,
            calendar_event.skip_dates if calendar_event else [])
        zone = ZoneInfo(zone_name)
        start = query.start or self.runtime.clock.now()
        if start.tzinfo is None:
            start = local_instant(start, zone)
        planned = domain.preview(start, steps, calendar)
        return SchedulePreview(
            sequence_id=query.sequence_id, timezone=zone_name, start=start,
            contact_id=query.contact_id,
            steps=[ScheduledStep(step_id=steps[i].step_id, step_index=i, channel=steps[i].channel,
                                 local=p.at.astimezone(zone), utc=p.at.astimezone(UTC),
                                 due=p.due.astimezone(zone), moved=p.moved)
                   for i, p in enumerate(planned)],
        )

    # --- firing -----------------------------------------------------------------------------

    async def fire_due(self, limit: int | None = None) -> int:
        """Claim due steps (skipping ones another replica holds) and append StepDue for each."""
        now = self.runtime.clock.now()
        limit = min(limit or self.batch_size, self.batch_size)
        async with self.runtime.engine.begin() as conn:
            rows = (await conn.execute(_CLAIM_DUE, {"now": now, "limit": limit})).all()
            if not rows:
                return 0
            crash_point("scheduler.after_claim")
            # each StepDue follows its own enrollment's cause (and workspace)
            appends = [_step_due(row) for row in rows]
            await self.runtime.store.append(conn, appends, appends[0].causation)
            await conn.execute(_MARK_FIRED, {
                "now": now,
                "enrollment_ids": [r.enrollment_id for r in rows],
                "step_ids": [r.step_id for r in rows],
            })
        self.fired += len(rows)
        for row in rows:
            metrics.step_lateness.record(max(0.0, (now - row.due_at).total_seconds()),
                                         {"channel": row.channel})
        return len(rows)

    async def run_firing(self) -> None:
        """Fire due steps in due order, at most `scheduler_max_rate` a second: a scheduler that
        was down for hours catches up steadily instead of flooding the mailer."""
        settings = self.runtime.settings
        bucket = TokenBucket(settings.scheduler_max_rate)
        while True:
            try:
                while (allowed := bucket.take(self.batch_size)) > 0:
                    fired = await self.fire_due(allowed)
                    bucket.give_back(allowed - fired)
                    if fired < allowed:
                        break
            except Exception:
                log.exception("firing due steps failed; retrying")
            await self.runtime.clock.wait_for_change(settings.scheduler_tick_seconds)


class TokenBucket:
    """Allows `rate` a second on average, with bursts of up to one second's worth."""

    def __init__(self, rate: float, now=time.monotonic):
        self.rate = rate
        self.tokens = rate
        self._now = now
        self.updated = now()

    def take(self, wanted: int) -> int:
        now = self._now()
        self.tokens = min(self.rate, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        granted = int(min(wanted, self.tokens))
        self.tokens -= granted
        return granted

    def give_back(self, unused: int) -> None:
        self.tokens += unused



def _replayed_sequence(envelopes: list, query: PreviewSchedule):
    """The sequence's settings and steps as its events say now (404 for another workspace's)."""
    if not envelopes or envelopes[0].workspace_id != query.workspace_id:
        raise Rejected(404, f"no such sequence: {query.sequence_id}", "sequence_id")
    settings, steps = {}, []
    for event in map(decode_event, envelopes):
        if isinstance(event, SequenceCreated):
            settings, steps = event.model_dump(), list(event.steps)
        elif isinstance(event, SequenceSettingsChanged):
            settings = event.settings.model_dump()
        elif isinstance(event, SequenceStepsChanged):
            steps = list(event.steps)
    return settings, steps


def _contact_zone(envelopes: list, origin, query: PreviewSchedule) -> str | None:
    """`origin`: the event the contact's stream begins in when an import created it (its
    chunk's ContactsImported), else None."""
    first = origin or (envelopes[0] if envelopes else None)
    if first is None or first.workspace_id != query.workspace_id:
        raise Rejected(404, f"no such contact: {query.contact_id}", "contact_id")
    events = list(map(decode_event, envelopes))
    if origin is not None:
        events.insert(0, ContactCreated.model_validate(imported_row(origin, query.contact_id)))
    zone = None
    for event in events:
        if isinstance(event, ContactCreated):
            zone = event.timezone
        elif isinstance(event, ContactUpdated) and "timezone" in event.changes:
            zone = event.changes["timezone"] or None
    return zone


@dataclass(frozen=True)
class Replan:
    """An enrollment whose next step is planned again, and the causation of its StepScheduled.
    `resumed_at`, `edited_at`: see `domain.next_planned`."""

    enrollment_id: uuid.UUID
    causation: Causation
    resumed_at: datetime | None = None
    edited_at: datetime | None = None


class _StepsOf:
    """The steps of each sequence, parsed once per planning pass (its rows share them)."""

    def __init__(self):
        self._parsed: dict = {}

    def __call__(self, where) -> list[Step]:
        if (steps := self._parsed.get(where.sequence_id)) is None:
            steps = self._parsed[where.sequence_id] = [Step.model_validate(s)
                                                       for s in where.steps]
        return steps


def _causes(wave: list[EventEnvelope]) -> dict:
    """What each enrollment's later StepDue follows: the event that planned it."""
    return {"correlations": [e.correlation_id for e in wave],
            "causations": [e.event_id for e in wave],
            "traceparents": [e.traceparent for e in wave]}


def _scheduled(replan: Replan, planned: domain.NextStep) -> Append:
    scheduled = StepScheduled(enrollment_id=replan.enrollment_id, step_id=planned.step.step_id,
                              step_index=planned.step_index, due_at=planned.planned.at,
                              held=planned.held, zone=planned.zone, moved=planned.planned.moved)
    return Append(scheduled.stream_id(), ANY_VERSION, [scheduled], causation=replan.causation)


def _step_due(row) -> Append:
    """StepDue continues the trace of the event that planned the step, under a span of its own."""
    planned = context_from({TRACEPARENT: row.traceparent})
    with _tracer.start_as_current_span("fire StepDue", context=planned, attributes={
        "enrollment_id": str(row.enrollment_id), "sequence_id": str(row.sequence_id),
        "step_index": row.step_index,
    }):
        fired = current_trace_headers()
    event = StepDue(
        enrollment_id=row.enrollment_id,
        sequence_id=row.sequence_id,
        contact_id=row.contact_id,
        step_id=row.step_id,
        step_index=row.step_index,
        channel=row.channel,
        due_at=row.due_at,
    )
    cause = Causation(workspace_id=row.workspace_id, correlation_id=row.correlation_id,
                      causation_id=row.causation_id, traceparent=fired.get(TRACEPARENT),
                      tracestate=fired.get(TRACESTATE))
    return Append(event.stream_id(), ANY_VERSION, [event], causation=cause)


def subscription(handlers: SchedulerHandlers) -> Subscription:
    planner = Subscription("scheduler-planner",
                           ["sequence", "enrollment", "delivery", "calendar"])
    planner.on(EmailDeferred)(handlers.on_email_deferred)
    planner.on(EnrollmentRetried)(handlers.on_retried)
    planner.on(EnrollmentNeedsAttention)(handlers.on_needs_attention)
    planner.on(SequenceCreated)(handlers.on_sequence_created)
    planner.on(SequenceStepsChanged)(handlers.on_steps_changed)
    planner.on(SequenceSettingsChanged)(handlers.on_settings_changed)
    planner.on(WorkspaceCalendarChanged)(handlers.on_workspace_calendar_changed)
    planner.on(EnrollmentContactZoneChanged)(handlers.on_contact_zone_changed)
    planner.on(SequencePaused)(handlers.on_sequence_paused)
    planner.on(SequenceArchived)(handlers.on_sequence_paused)
    planner.on(SequenceResumed)(handlers.on_sequence_resumed)
    planner.on_batch(ContactEnrolled)(handlers.on_contacts_enrolled)
    planner.on_batch(EnrollmentStepCompleted)(handlers.on_steps_completed)
    planner.on(EnrollmentPaused)(handlers.on_enrollment_paused)
    planner.on(EnrollmentResumed)(handlers.on_enrollment_resumed)
    for ending in (EnrollmentCompleted, EnrollmentReplied, EnrollmentBounced, EnrollmentStopped):
        planner.on_batch(ending)(handlers.on_enrollments_ended)
    return planner
