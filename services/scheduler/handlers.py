"""Scheduler handlers: keep each enrollment's next step planned from the events, fire it when due.

Planning is one function, `_replan`, used whenever something that decides the next step changes:
an enrollment starts, a step completes, the steps are edited, a paused sequence resumes.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.base import decode_event, stream_id
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
from contracts.values import Step, next_step, steps_json
from contracts.views import ScheduledStep, SchedulePreview
from sequences import metrics
from sequences.bootstrap import Runtime
from sequences.eventlog.store import ANY_VERSION, Append, Causation
from sequences.faults import crash_point
from sequences.i18n import N_
from sequences.messaging.consumer import Delivery, NotReady, Subscription
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

_WHERE_IT_STANDS = text(
    """
    SELECT e.completed, e.anchor_at, e.active, e.contact_timezone, e.paused_until,
           s.timezone, s.send_policy,
           s.steps, s.state, s.holidays, s.zone_mode, w.holidays AS workspace_holidays,
           w.skip_dates, d.due_at AS planned_at
    FROM scheduler.enrollments e JOIN scheduler.sequences s USING (sequence_id)
    LEFT JOIN scheduler.workspace_calendars w ON w.workspace_id = s.workspace_id
    LEFT JOIN scheduler.due_steps d ON d.enrollment_id = e.enrollment_id
         AND d.state IN ('pending', 'held')
    WHERE e.enrollment_id = :id
    -- A pause or an edit (which update the sequence row) and a step completing (another
    -- stream, maybe another replica) must not plan from each other's stale view: whoever
    -- plans second waits for the first and reads what it wrote.
    FOR UPDATE OF e FOR SHARE OF s
    LIMIT 1
    """
)
_DROP_SUPERSEDED = text(
    "DELETE FROM scheduler.due_steps WHERE enrollment_id = :id"
    " AND state IN ('pending', 'held') AND step_id IS DISTINCT FROM :keep"
)
_PLAN = text(
    """
    INSERT INTO scheduler.due_steps (enrollment_id, step_id, step_index, channel, due_at, state)
    VALUES (:id, :step_id, :step_index, :channel, :due_at, :state)
    ON CONFLICT (enrollment_id, step_id) DO UPDATE
        SET step_index = EXCLUDED.step_index, channel = EXCLUDED.channel,
            due_at = EXCLUDED.due_at, state = EXCLUDED.state
        WHERE scheduler.due_steps.state IN ('pending', 'held')
          AND (scheduler.due_steps.due_at, scheduler.due_steps.state, scheduler.due_steps.step_index)
              IS DISTINCT FROM (EXCLUDED.due_at, EXCLUDED.state, EXCLUDED.step_index)
    """
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
        for enrollment_id in await self._active_enrollments(d.conn, event.sequence_id):
            await self._replan(d, enrollment_id)

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
        for enrollment_id in await self._active_enrollments(d.conn, event.sequence_id):
            await self._replan(d, enrollment_id, edited_at=d.envelope.occurred_at)

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
        for row in rows.all():
            await self._replan(d, row.enrollment_id, edited_at=d.envelope.occurred_at)

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
        for enrollment_id in await self._active_enrollments(d.conn, event.sequence_id):
            await self._replan(d, enrollment_id)

    async def on_sequence_resumed(self, event: SequenceResumed, d: Delivery) -> None:
        """Held steps go on; those whose moment passed during the pause are re-planned from the
        resume moment by the same rules (the next send time), not fired all at once."""
        await d.conn.execute(
            text("UPDATE scheduler.sequences SET state = 'live' WHERE sequence_id = :id"),
            {"id": event.sequence_id},
        )
        for enrollment_id in await self._active_enrollments(d.conn, event.sequence_id):
            await self._replan(d, enrollment_id, not_before=event.resumed_at)

    # --- enrollments ------------------------------------------------------------------------

    async def on_contact_enrolled(self, event: ContactEnrolled, d: Delivery) -> None:
        await d.conn.execute(
            text(
                "INSERT INTO scheduler.enrollments (enrollment_id, workspace_id, sequence_id,"
                " contact_id, anchor_at, correlation_id, causation_id, traceparent,"
                " contact_timezone)"
                " VALUES (:id, :ws, :sequence_id, :contact_id, :at, :correlation_id,"
                " :causation_id, :traceparent, :contact_timezone)"
            ),
            {"id": event.enrollment_id, "ws": d.envelope.workspace_id,
             "sequence_id": event.sequence_id, "contact_id": event.contact_id,
             "at": event.enrolled_at, "contact_timezone": event.contact_timezone, **_cause(d)},
        )
        await self._replan(d, event.enrollment_id)

    async def on_step_completed(self, event: EnrollmentStepCompleted, d: Delivery) -> None:
        """The next wait counts from this moment."""
        await d.conn.execute(
            text(
                "UPDATE scheduler.enrollments SET completed = array_append(completed, :step_id),"
                " anchor_at = :at, paused_until = NULL, correlation_id = :correlation_id,"
                " causation_id = :causation_id, traceparent = :traceparent"
                " WHERE enrollment_id = :id"
            ),
            {"id": event.enrollment_id, "step_id": event.step_id, "at": event.completed_at,
             **_cause(d)},
        )
        await self._replan(d, event.enrollment_id)

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
        await self._replan(d, event.enrollment_id, not_before=event.resumed_at)

    async def on_email_deferred(self, event: EmailDeferred, d: Delivery) -> None:
        """A mailbox limit moved the step: it fires again at `until`, or when the window next
        opens after it (a minimum gap spreads a window's sends, never past its end)."""
        until = event.until
        where = (await d.conn.execute(_WHERE_IT_STANDS, {"id": event.enrollment_id})).first()
        if where is not None:
            until, _ = next_send(until, self._calendar(where))
        await self._refire(d, event.enrollment_id, event.step_id, until, event.reason,
                           event.reason_text)

    def _calendar(self, where):
        zone = domain.zone_of(where.timezone, where.zone_mode, where.contact_timezone)
        return domain.sequence_calendar(zone, where.send_policy, where.holidays,
                                        where.workspace_holidays, where.skip_dates)

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

    async def on_enrollment_ended(self, event, d: Delivery) -> None:
        """Done, replied, bounced or stopped: whatever was pending never fires."""
        await d.conn.execute(
            text("UPDATE scheduler.enrollments SET active = false WHERE enrollment_id = :id"),
            {"id": event.enrollment_id},
        )
        await d.conn.execute(
            text("UPDATE scheduler.due_steps SET state = 'cancelled'"
                 " WHERE enrollment_id = :id AND state IN ('pending', 'held')"),
            {"id": event.enrollment_id},
        )

    async def _active_enrollments(self, conn: AsyncConnection, sequence_id) -> list:
        rows = await conn.execute(
            text("SELECT enrollment_id FROM scheduler.enrollments"
                 " WHERE sequence_id = :id AND active"),
            {"id": sequence_id},
        )
        return [row.enrollment_id for row in rows]

    async def _replan(self, d: Delivery, enrollment_id, not_before: datetime | None = None,
                      edited_at: datetime | None = None) -> None:
        """Plan the enrollment's next step from where it stands; announce it (StepScheduled)
        when the plan changed. `not_before` (a resume): a moment that passed is planned from
        there. `edited_at` (new rules): a moment that passed is planned from when the step was
        planned to go, so an edit never makes a step fire at once."""
        conn = d.conn
        where = (await conn.execute(_WHERE_IT_STANDS, {"id": enrollment_id})).first()
        if where is None:
            raise NotReady(f"enrollment {enrollment_id} or its sequence not seen yet")
        steps = [Step.model_validate(s) for s in where.steps]
        step = next_step(steps, set(where.completed)) if where.active else None
        await conn.execute(_DROP_SUPERSEDED, {"id": enrollment_id,
                                              "keep": step.step_id if step else None})
        if step is None:
            return  # nothing left: the enrollment service records it as done
        zone = domain.zone_of(where.timezone, where.zone_mode, where.contact_timezone)
        calendar = self._calendar(where)
        planned = domain.plan(where.anchor_at, step, calendar)
        if not_before is not None and planned.at < not_before:
            planned = domain.not_before(not_before, calendar)
        if where.paused_until is not None and planned.at < where.paused_until:
            planned = domain.not_before(where.paused_until, calendar)  # out of office
        if edited_at is not None and planned.at < edited_at:
            planned = domain.not_before(max(where.planned_at or edited_at, edited_at), calendar)
        plan = {"id": enrollment_id, "step_id": step.step_id, "step_index": steps.index(step),
                "channel": step.channel, "due_at": planned.at,
                "state": "pending" if where.state == "live" else "held"}
        if (await conn.execute(_PLAN, plan)).rowcount:
            scheduled = StepScheduled(enrollment_id=enrollment_id, step_id=step.step_id,
                                      step_index=plan["step_index"], due_at=planned.at,
                                      held=plan["state"] == "held", zone=zone,
                                      moved=planned.moved)
            await self.runtime.store.append(
                conn, [Append(scheduled.stream_id(), ANY_VERSION, [scheduled])], d.causation)

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


def _cause(d: Delivery) -> dict:
    return {"correlation_id": d.envelope.correlation_id, "causation_id": d.envelope.event_id,
            "traceparent": d.envelope.traceparent}


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
    planner.on(ContactEnrolled)(handlers.on_contact_enrolled)
    planner.on(EnrollmentStepCompleted)(handlers.on_step_completed)
    planner.on(EnrollmentPaused)(handlers.on_enrollment_paused)
    planner.on(EnrollmentResumed)(handlers.on_enrollment_resumed)
    for ending in (EnrollmentCompleted, EnrollmentReplied, EnrollmentBounced, EnrollmentStopped):
        planner.on(ending)(handlers.on_enrollment_ended)
    return planner
