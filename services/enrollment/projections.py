"""The enrollment service's read models: sequences, contacts and enrollments as the API shows them.

Every table here is written only by these handlers, from events, so `sequences projections
rebuild` can empty them and replay the log to the same rows.

The set-based handlers run on the driver's binary path (`exec_driver_sql` with `%(name)b`
arrays, as the event store appends): psycopg then quotes no array element in Python, which
made them the larger part of a rebuild's time.
"""

from __future__ import annotations

import json

from collections import Counter

from sqlalchemy import text

from contracts.base import EventEnvelope
from contracts.events import (
    AddressSuppressed,
    ContactCreated,
    ContactDeleted,
    ContactEnrolled,
    ContactOptedOut,
    ContactsImported,
    ContactUpdated,
    EnrollmentBounced,
    EnrollmentCompleted,
    EnrollmentReplied,
    EnrollmentPaused,
    EnrollmentResumed,
    EmailOpened,
    EnrollmentNeedsAttention,
    EnrollmentRetried,
    EnrollmentStepCompleted,
    EnrollmentStopped,
    SequenceArchived,
    SequenceCreated,
    SequencePaused,
    SequenceResumed,
    SequenceSettingsChanged,
    SequenceStepFlagged,
    SequenceStepsChanged,
    StepDue,
    StepScheduled,
    SuppressionRemoved,
    TaskCompleted,
    TaskDue,
)
from contracts.texts import REPLIED, said
from contracts.values import pool_addresses, steps_json
from contracts.views import EnrollmentStatus
from sequences.messaging.consumer import Delivery, Subscription
from sequences.projections import Projection
from services.enrollment import search

projector = Subscription(
    "enrollment-projector", ["sequence", "contact", "import", "enrollment", "schedule",
                             "delivery", "task", "suppression"],
    rebuildable=True,
    # appended by this service alone, always through EnrollmentCommands._record, which applies
    # them here in the appending transaction (task streams are not: the mailer appends TaskDue)
    applied_at_append=("sequence", "contact", "import", "enrollment", "suppression"),
)
PROJECTION = Projection(
    projector, ("enrollment.sequences", "enrollment.contacts", "enrollment.enrollments",
                "enrollment.email_opens", "enrollment.tasks", "enrollment.step_completions",
                "enrollment.suppressions", "enrollment.step_flags",
                # (kept by triggers on enrollments: migrations/0010_enrollment_counts.sql)
                "enrollment.enrollment_counts"),
    # what the API lists and searches by; the handlers find rows by primary key, and
    # enrollments by contact (contact_updated), which must stay
    unread_indexes=("enrollment.sequences_by_creation", "enrollment.contacts_by_creation",
                    "enrollment.contacts_tags", "enrollment.contacts_lists",
                    "enrollment.contacts_status", "enrollment.contacts_search_grams",
                    "enrollment.enrollments_by_sequence",
                    "enrollment.enrollments_by_sequence_status",
                    "enrollment.enrollments_by_sequence_activity", "enrollment.tasks_open_by_owner",
                    "enrollment.tasks_by_sequence", "enrollment.tasks_by_workspace",
                    "enrollment.tasks_by_enrollment",
                    "enrollment.step_completions_by_sequence"),
    rewritten_tables=("enrollment.enrollments",),
)



# --- sequences ---------------------------------------------------------------------------------


@projector.on(SequenceCreated)
async def sequence_created(event: SequenceCreated, d: Delivery) -> None:
    await d.conn.execute(
        text(
            "INSERT INTO enrollment.sequences (sequence_id, workspace_id, name, purpose,"
            " sender_name, sender_email, timezone, send_policy, steps, language, state,"
            " created_at, mailbox_pool, holidays, zone_mode, on_account_reply)"
            " VALUES (:id, :workspace_id, :name, :purpose, :sender_name, :sender_email,"
            " :timezone, CAST(:send_policy AS jsonb), CAST(:steps AS jsonb), :language, 'live',"
            " :at, :pool, CAST(:holidays AS jsonb), :zone_mode, CAST(:account_reply AS jsonb))"
        ),
        {
            "id": event.sequence_id,
            "workspace_id": d.envelope.workspace_id,
            "name": event.name,
            "purpose": event.purpose,
            "sender_name": event.sender_name,
            "sender_email": event.sender_email,
            "timezone": event.timezone,
            "send_policy": event.send_policy.model_dump_json(),
            "steps": steps_json(event.steps),
            "language": event.language,
            "at": d.envelope.occurred_at,
            "pool": pool_addresses(event.mailbox_pool),
            "holidays": _holidays_json(event.holidays),
            "zone_mode": event.zone_mode,
            "account_reply": event.on_account_reply.model_dump_json(),
        },
    )


def _holidays_json(choice) -> str:
    return choice.model_dump_json() if hasattr(choice, "model_dump_json") else f'"{choice}"'


@projector.on(SequenceSettingsChanged)
async def settings_changed(event: SequenceSettingsChanged, d: Delivery) -> None:
    settings = event.settings
    await d.conn.execute(
        text("UPDATE enrollment.sequences SET name = :name, purpose = :purpose,"
             " sender_name = :sender_name, sender_email = :sender_email, timezone = :timezone,"
             " send_policy = CAST(:send_policy AS jsonb), language = :language,"
             " holidays = CAST(:holidays AS jsonb), zone_mode = :zone_mode, mailbox_pool = :pool,"
             " on_account_reply = CAST(:account_reply AS jsonb)"
             " WHERE sequence_id = :id"),
        {"id": event.sequence_id, "name": settings.name, "purpose": settings.purpose,
         "sender_name": settings.sender_name, "sender_email": settings.sender_email,
         "timezone": settings.timezone, "send_policy": settings.send_policy.model_dump_json(),
         "language": settings.language, "holidays": _holidays_json(settings.holidays),
         "pool": pool_addresses(settings.mailbox_pool),
         "zone_mode": settings.zone_mode,
         "account_reply": settings.on_account_reply.model_dump_json()},
    )


@projector.on(SequenceStepsChanged)
async def steps_changed(event: SequenceStepsChanged, d: Delivery) -> None:
    # a flagged step whose subject or body was edited is no longer flagged
    kept = [str(s.step_id) for s in event.steps]
    await d.conn.execute(
        text("DELETE FROM enrollment.step_flags f USING enrollment.sequences s,"
             " jsonb_array_elements(s.steps) old, jsonb_array_elements(CAST(:steps AS jsonb)) new"
             " WHERE s.sequence_id = :id AND f.sequence_id = :id"
             " AND old->>'step_id' = CAST(f.step_id AS text) AND new->>'step_id' = old->>'step_id'"
             " AND (old->'subject' IS DISTINCT FROM new->'subject'"
             "      OR old->'body' IS DISTINCT FROM new->'body')"),
        {"id": event.sequence_id, "steps": steps_json(event.steps)},
    )
    await d.conn.execute(
        text("DELETE FROM enrollment.step_flags WHERE sequence_id = :id"
             " AND NOT CAST(step_id AS text) = ANY(:kept)"),
        {"id": event.sequence_id, "kept": kept},
    )
    await d.conn.execute(
        text("UPDATE enrollment.sequences SET steps = CAST(:steps AS jsonb) WHERE sequence_id = :id"),
        {"id": event.sequence_id, "steps": steps_json(event.steps)},
    )


@projector.on(SequenceStepFlagged)
async def step_flagged(event: SequenceStepFlagged, d: Delivery) -> None:
    await d.conn.execute(
        text("INSERT INTO enrollment.step_flags (sequence_id, step_id, reason, diagnostic,"
             " flagged_at) VALUES (:sequence_id, :step_id, :reason, :diagnostic, :flagged_at)"
             " ON CONFLICT (sequence_id, step_id) DO UPDATE SET reason = EXCLUDED.reason,"
             " diagnostic = EXCLUDED.diagnostic, flagged_at = EXCLUDED.flagged_at"),
        event.model_dump(),
    )


_SEQUENCE_STATES = {SequencePaused: "paused", SequenceResumed: "live", SequenceArchived: "archived"}


async def sequence_state_changed(event, d: Delivery) -> None:
    await d.conn.execute(
        text("UPDATE enrollment.sequences SET state = :state, paused_reason = :why"
             " WHERE sequence_id = :id"),
        {"id": event.sequence_id, "state": _SEQUENCE_STATES[type(event)],
         "why": getattr(event, "reason", None)},
    )


for _change in _SEQUENCE_STATES:
    projector.on(_change)(sequence_state_changed)


# --- contacts ----------------------------------------------------------------------------------


@projector.on_batch(ContactCreated)
async def contacts_created(run: list[EventEnvelope], conn) -> None:
    """Set-based: a run of 100,000 contacts is one statement."""
    await _insert_contacts(conn, [(e.data, e.workspace_id, e.occurred_at) for e in run])


@projector.on_batch(ContactsImported)
async def contacts_imported(run: list[EventEnvelope], conn) -> None:
    """Every contact of every chunk of the run in one statement."""
    await _insert_contacts(conn, [(contact, e.workspace_id, e.occurred_at)
                                  for e in run for contact in e.data["contacts"]])


_TEXT_COLUMNS = ("name", "company", "job_title", "owner_name", "email", "phone", "status",
                 "timezone")
# Tags, lists and search bigrams go as one text each, split by PostgreSQL: arrays of arrays
# would have to be of one length. The unit separator cannot be in them: labels and the
# searched fields are single lines, which refuse control characters (contracts/values.py).
_SEPARATOR = "\x1f"


async def _insert_contacts(conn, contacts: list[tuple[dict, object, object]]) -> None:
    """New contacts: (the fields of their `ContactCreated`, workspace, when), in one statement
    on binary arrays (a JSON document of them cost PostgreSQL a third more, and Python too)."""
    params = {f"{column}s": [data.get(column) for data, _, _ in contacts]
              for column in _TEXT_COLUMNS}
    params |= {
        "ids": [data["contact_id"] for data, _, _ in contacts],
        "workspaces": [workspace_id for _, workspace_id, _ in contacts],
        "ats": [at for _, _, at in contacts],
        "tags": [_SEPARATOR.join(data.get("tags", ())) for data, _, _ in contacts],
        "lists": [_SEPARATOR.join(data.get("lists", ())) for data, _, _ in contacts],
        "grams": [_SEPARATOR.join(_search_grams(data)) for data, _, _ in contacts],
    }
    await conn.exec_driver_sql(
        "INSERT INTO enrollment.contacts (contact_id, workspace_id, name, company, job_title,"
        " owner_name, email, phone, status, tags, lists, timezone, search_grams, created_at,"
        " updated_at)"
        " SELECT c.contact_id, c.workspace_id, c.name, c.company, c.job_title, c.owner_name,"
        " c.email, c.phone, c.status, string_to_array(c.tags, E'\\x1f'),"
        " string_to_array(c.lists, E'\\x1f'), c.timezone, string_to_array(c.grams, E'\\x1f'),"
        " c.at, c.at"
        " FROM unnest(%(ids)b::uuid[], %(workspaces)b::uuid[], %(names)b::text[],"
        "   %(companys)b::text[], %(job_titles)b::text[], %(owner_names)b::text[],"
        "   %(emails)b::text[], %(phones)b::text[], %(statuss)b::text[], %(tags)b::text[],"
        "   %(lists)b::text[], %(timezones)b::text[], %(grams)b::text[], %(ats)b::timestamptz[])"
        "   AS c(contact_id, workspace_id, name, company, job_title, owner_name, email, phone,"
        "        status, tags, lists, timezone, grams, at)",
        params,
    )


def _json(value) -> str | None:
    """A model or event data (a dict) as JSON for a jsonb parameter; None stays NULL."""
    if value is None:
        return None
    return value.model_dump_json() if hasattr(value, "model_dump_json") else json.dumps(value)


def _search_grams(contact: dict) -> list[str]:
    return search.grams(*(contact.get(field) or "" for field in search.FIELDS))


_CONTACT_COLUMNS = ("name", "company", "job_title", "owner_name", "email", "phone", "status",
                    "tags", "lists", "timezone")


@projector.on(ContactUpdated)
async def contact_updated(event: ContactUpdated, d: Delivery) -> None:
    changes = {k: v for k, v in event.changes.items() if k in _CONTACT_COLUMNS}
    if "timezone" in changes:
        changes["timezone"] = changes["timezone"] or None  # "" clears it
    assignments = ", ".join(f"{column} = :{column}" for column in changes)
    updated = (await d.conn.execute(
        text(f"UPDATE enrollment.contacts SET {assignments}, updated_at = :at"
             " WHERE contact_id = :id RETURNING name, company, email"),
        {**changes, "id": event.contact_id, "at": d.envelope.occurred_at},
    )).mappings().first()
    if updated is not None and changes.keys() & set(search.FIELDS):
        await d.conn.execute(
            text("UPDATE enrollment.contacts SET search_grams = :grams WHERE contact_id = :id"),
            {"grams": _search_grams(updated), "id": event.contact_id})
    if "name" in changes or "email" in changes:
        await d.conn.execute(
            text("UPDATE enrollment.enrollments e SET contact_name = c.name,"
                 " contact_email = c.email FROM enrollment.contacts c"
                 " WHERE c.contact_id = :id AND e.contact_id = :id"),
            {"id": event.contact_id},
        )


@projector.on(ContactDeleted)
async def contact_deleted(event: ContactDeleted, d: Delivery) -> None:
    await d.conn.execute(
        text("UPDATE enrollment.contacts SET deleted = true, updated_at = :at"
             " WHERE contact_id = :id"),
        {"id": event.contact_id, "at": event.deleted_at},
    )


@projector.on(ContactOptedOut)
async def contact_opted_out(event: ContactOptedOut, d: Delivery) -> None:
    await d.conn.execute(
        text("UPDATE enrollment.contacts SET opted_out = true, updated_at = :at"
             " WHERE contact_id = :id"),
        {"id": event.contact_id, "at": event.opted_out_at},
    )


# --- enrollments -------------------------------------------------------------------------------


@projector.on_batch(ContactEnrolled)
async def contacts_enrolled(run: list[EventEnvelope], conn) -> None:
    """Set-based: a bulk enrollment of 100,000 is two statements, not 200,000."""
    run = [e.data for e in run]
    sequences = [e["sequence_id"] for e in run]
    await conn.exec_driver_sql(
        "INSERT INTO enrollment.enrollments (enrollment_id, workspace_id, sequence_id,"
        " contact_id, attempt, email, contact_name, contact_email, status, current_step,"
        " sends, enrolled_at, last_activity_at)"
        " SELECT v.enrollment_id, c.workspace_id, v.sequence_id, v.contact_id, v.attempt,"
        " v.email, c.name, c.email, 'active', 0, 0, v.at, v.at"
        " FROM unnest(%(ids)b::uuid[], %(sequences)b::uuid[], %(contacts)b::uuid[],"
        "   %(attempts)b::integer[], %(emails)b::text[], %(ats)b::timestamptz[])"
        "   AS v(enrollment_id, sequence_id, contact_id, attempt, email, at)"
        " JOIN enrollment.contacts c ON c.contact_id = v.contact_id",
        {
            "ids": [e["enrollment_id"] for e in run],
            "sequences": sequences,
            "contacts": [e["contact_id"] for e in run],
            "attempts": [e.get("attempt", 1) for e in run],
            "emails": [e["email"] for e in run],
            "ats": [e["enrolled_at"] for e in run],
        },
    )
    await conn.exec_driver_sql(
        "UPDATE enrollment.sequences s SET enrolled = enrolled + n.count"
        " FROM (SELECT id, count(*) FROM unnest(%(sequences)b::uuid[]) AS id"
        "       GROUP BY id) AS n WHERE s.sequence_id = n.id",
        {"sequences": sequences},
    )


@projector.on_batch(EnrollmentStepCompleted)
async def steps_completed(run: list[EventEnvelope], conn) -> None:
    run = [e.data for e in run]
    per_enrollment: dict[str, dict] = {}
    for e in run:  # one enrollment may complete several steps within one run
        seen = per_enrollment.setdefault(e["enrollment_id"], {"steps": 0, "sends": 0})
        seen["steps"] += 1
        seen["sends"] += e["channel"] == "email"
        seen["at"] = e["completed_at"]
        seen["last_step"] = e["step_id"]
    await conn.exec_driver_sql(
        "UPDATE enrollment.enrollments e SET current_step = e.current_step + v.steps,"
        " sends = e.sends + v.sends, last_activity_at = v.at, last_step_id = v.last_step,"
        " paused_until = NULL, pause_reason = NULL"  # a step went out: the pause is over
        " FROM unnest(%(ids)b::uuid[], %(steps)b::integer[], %(sends)b::integer[],"
        "   %(ats)b::timestamptz[], %(last_steps)b::uuid[]) AS v(id, steps, sends, at, last_step)"
        " WHERE e.enrollment_id = v.id",
        {"ids": list(per_enrollment), "steps": [v["steps"] for v in per_enrollment.values()],
         "sends": [v["sends"] for v in per_enrollment.values()],
         "ats": [v["at"] for v in per_enrollment.values()],
         "last_steps": [v["last_step"] for v in per_enrollment.values()]},
    )
    # who got which step (the Steps tab's counts); a step done twice counts once
    await conn.exec_driver_sql(
        "INSERT INTO enrollment.step_completions (enrollment_id, step_id, sequence_id,"
        " workspace_id, channel, completed_at)"
        " SELECT v.enrollment_id, v.step_id, e.sequence_id, e.workspace_id, v.channel, v.at"
        " FROM unnest(%(ids)b::uuid[], %(step_ids)b::uuid[], %(channels)b::text[],"
        "   %(ats)b::timestamptz[]) AS v(enrollment_id, step_id, channel, at)"
        " JOIN enrollment.enrollments e ON e.enrollment_id = v.enrollment_id"
        " ON CONFLICT DO NOTHING",
        {"ids": [e["enrollment_id"] for e in run], "step_ids": [e["step_id"] for e in run],
         "channels": [e["channel"] for e in run], "ats": [e["completed_at"] for e in run]},
    )


# each ending: the status it sets, the field of its moment, and the reason it shows
_ENDINGS = {
    EnrollmentCompleted: (EnrollmentStatus.done, "completed_at", lambda e: None),
    EnrollmentReplied: (EnrollmentStatus.replied, "replied_at", lambda e: REPLIED),
    EnrollmentBounced: (EnrollmentStatus.bounced, "bounced_at", lambda e: e["reason"]),
    EnrollmentStopped: (EnrollmentStatus.stopped, "stopped_at",
                        lambda e: e.get("reason") or "stopped"),
}


def _ending_text(event_type, event: dict) -> str | None:
    """Why it ended, as a text any language can show (JSON), when the event carries one."""
    if event_type is EnrollmentReplied:
        return said(REPLIED).model_dump_json()
    text = event.get("reason_text")
    return json.dumps(text) if text else None


def _ending(event_type):
    status, moment, reason = _ENDINGS[event_type]

    async def enrollments_ended(run: list[EventEnvelope], conn) -> None:
        last = {e.data["enrollment_id"]: e.data for e in run}
        if event_type is EnrollmentBounced:
            await _bounce_classes(conn, last)
        if event_type is EnrollmentReplied:
            await _reply_intents(conn, last)
        await conn.exec_driver_sql(
            "UPDATE enrollment.enrollments e SET status = %(status)s, last_activity_at = v.at,"
            " next_due_at = NULL, held = false, attention = NULL, attention_text = NULL,"
            " ended_reason = v.reason, ended_reason_text = v.reason_text::jsonb"
            # reasons may all be NULL (nothing to infer a binary type from): sent as text
            " FROM unnest(%(ids)b::uuid[], %(ats)b::timestamptz[], %(reasons)s::text[],"
            "             %(texts)s::text[]) AS v(id, at, reason, reason_text)"
            " WHERE e.enrollment_id = v.id",
            {"status": status, "ids": list(last), "ats": [e[moment] for e in last.values()],
             "reasons": [reason(e) for e in last.values()],
             "texts": [_ending_text(event_type, e) for e in last.values()]},
        )

    return enrollments_ended


async def _reply_intents(conn, replied: dict[str, dict]) -> None:
    """What each reply wanted (events before intents existed read as "other")."""
    await conn.exec_driver_sql(
        "UPDATE enrollment.enrollments e SET reply_intent = v.intent"
        " FROM unnest(%(ids)b::uuid[], %(intents)b::text[]) AS v(id, intent)"
        " WHERE e.enrollment_id = v.id",
        {"ids": list(replied), "intents": [e.get("intent", "other") for e in replied.values()]},
    )


async def _bounce_classes(conn, bounced: dict[str, dict]) -> None:
    """What the bounce-rate guard counts: the class of each bounce, and whether it was refused
    at send time."""
    await conn.exec_driver_sql(
        "UPDATE enrollment.enrollments e SET bounce_class = v.class, bounced_at_send = v.at_send"
        " FROM unnest(%(ids)b::uuid[], %(classes)b::text[], %(at_send)b::boolean[])"
        "   AS v(id, class, at_send) WHERE e.enrollment_id = v.id",
        {"ids": list(bounced), "classes": [e.get("bounce_class", "unknown")
                                           for e in bounced.values()],
         "at_send": [e.get("at_send", False) for e in bounced.values()]},
    )


for _ending_type in _ENDINGS:
    projector.on_batch(_ending_type)(_ending(_ending_type))


@projector.on(EnrollmentPaused)
async def enrollment_paused(event: EnrollmentPaused, d: Delivery) -> None:
    await d.conn.execute(
        text("UPDATE enrollment.enrollments SET paused_until = :until, pause_reason = :reason,"
             " last_activity_at = :at WHERE enrollment_id = :id"),
        {"id": event.enrollment_id, "until": event.until, "reason": event.reason,
         "at": d.envelope.occurred_at},
    )


@projector.on(EnrollmentResumed)
async def enrollment_resumed(event: EnrollmentResumed, d: Delivery) -> None:
    await d.conn.execute(
        text("UPDATE enrollment.enrollments SET paused_until = NULL, pause_reason = NULL,"
             " last_activity_at = :at WHERE enrollment_id = :id"),
        {"id": event.enrollment_id, "at": event.resumed_at},
    )


@projector.on(EnrollmentNeedsAttention)
async def needs_attention(event: EnrollmentNeedsAttention, d: Delivery) -> None:
    await d.conn.execute(
        text("UPDATE enrollment.enrollments SET status = 'needs_attention', attention = :reason,"
             " attention_text = CAST(:text AS jsonb), next_due_at = NULL, last_activity_at = :at"
             " WHERE enrollment_id = :id"),
        {"id": event.enrollment_id, "reason": event.reason, "text": _json(event.reason_text),
         "at": d.envelope.occurred_at},
    )


@projector.on(EnrollmentRetried)
async def retried(event: EnrollmentRetried, d: Delivery) -> None:
    await d.conn.execute(
        text("UPDATE enrollment.enrollments SET status = 'active', attention = NULL,"
             " attention_text = NULL, last_activity_at = :at WHERE enrollment_id = :id"),
        {"id": event.enrollment_id, "at": event.retried_at},
    )


@projector.on_batch(StepScheduled)
async def steps_scheduled(run: list[EventEnvelope], conn) -> None:
    """The next send, of an active enrollment only (an ended one sends nothing more, a held
    one shows why instead); the note, why it moved, is the latest plan's whatever the status.
    A rebuild replays an enrollment's own events before its schedule's within a batch
    (`_in_replay_order`): a plan made between a retry and the hold after it comes after both
    there, so the note must not depend on the status the plan finds."""
    last = {e.data["enrollment_id"]: e.data for e in run}  # the latest plan of each enrollment wins
    await conn.exec_driver_sql(
        "UPDATE enrollment.enrollments e"
        " SET next_due_at = CASE WHEN e.status = 'active' THEN v.due ELSE e.next_due_at END,"
        " held = CASE WHEN e.status = 'active' THEN v.held ELSE e.held END,"
        " schedule_note = v.note, schedule_note_text = CAST(v.note_text AS jsonb),"
        " schedule_zone = v.zone, schedule_moved = v.moved"
        " FROM unnest(%(ids)b::uuid[], %(dues)b::timestamptz[], %(helds)b::boolean[],"
        "   %(notes)s::text[], %(note_texts)s::text[], %(zones)s::text[], %(moved)s::jsonb[])"
        "   AS v(id, due, held, note, note_text, zone, moved)"
        " WHERE e.enrollment_id = v.id",  # (notes and zones may all be NULL: sent as text)
        {"ids": list(last), "dues": [e["due_at"] for e in last.values()],
         "helds": [e.get("held", False) for e in last.values()],
         "notes": [e.get("reason") for e in last.values()],
         "note_texts": [_json(e.get("reason_text")) for e in last.values()],
         "zones": [e.get("zone") for e in last.values()],
         "moved": [json.dumps(e.get("moved") or []) for e in last.values()]},
    )


@projector.on_batch(StepDue)
async def steps_due(run: list[EventEnvelope], conn) -> None:
    await conn.exec_driver_sql(
        "UPDATE enrollment.enrollments SET next_due_at = NULL"
        " WHERE enrollment_id = ANY(%(ids)b::uuid[])",
        {"ids": list({e.data["enrollment_id"] for e in run})},
    )


@projector.on_batch(EmailOpened)
async def emails_opened(run: list[EventEnvelope], conn) -> None:
    """Opens per email, and per enrollment; an email whose row this run creates is one more
    unique open."""
    opens = Counter((e.data["enrollment_id"], e.data["step_id"]) for e in run)
    await conn.exec_driver_sql(
        "WITH v AS (SELECT * FROM unnest(%(enrollments)b::uuid[], %(steps)b::uuid[],"
        "   %(opens)b::integer[]) AS v(enrollment_id, step_id, n)),"
        " counted AS (INSERT INTO enrollment.email_opens AS o (enrollment_id, step_id, opens)"
        "   SELECT * FROM v ON CONFLICT (enrollment_id, step_id)"
        "   DO UPDATE SET opens = o.opens + EXCLUDED.opens RETURNING enrollment_id, step_id, opens)"
        " UPDATE enrollment.enrollments e SET opens = e.opens + t.n,"
        "   unique_opens = e.unique_opens + t.first"
        " FROM (SELECT enrollment_id, sum(v.n) AS n, count(*) FILTER (WHERE c.opens = v.n) AS first"
        "       FROM counted c JOIN v USING (enrollment_id, step_id) GROUP BY enrollment_id) t"
        " WHERE e.enrollment_id = t.enrollment_id",
        {"enrollments": [e for e, _ in opens], "steps": [s for _, s in opens],
         "opens": list(opens.values())},
    )


@projector.on(TaskDue)
async def task_due(event: TaskDue, d: Delivery) -> None:
    await d.conn.execute(
        text("INSERT INTO enrollment.tasks (task_id, workspace_id, enrollment_id, sequence_id,"
             " contact_id, contact_name, step_id, step_index, owner_name, channel, instructions,"
             " due_at, state) SELECT :task_id, c.workspace_id, :enrollment_id, :sequence_id,"
             " :contact_id, c.name,"
             " :step_id, :step_index, :owner_name, :channel, :instructions, :due_at, 'open'"
             " FROM enrollment.contacts c WHERE c.contact_id = :contact_id"
             " ON CONFLICT (task_id) DO NOTHING"),
        event.model_dump(mode="json"),
    )


@projector.on(TaskCompleted)
async def task_completed(event: TaskCompleted, d: Delivery) -> None:
    await d.conn.execute(
        text("UPDATE enrollment.tasks SET state = :outcome, completed_at = :at"
             " WHERE task_id = :id"),
        {"id": event.task_id, "outcome": event.outcome, "at": event.completed_at},
    )


@projector.on(StepDue)
async def step_due(event: StepDue, d: Delivery) -> None:
    await d.conn.execute(
        text("UPDATE enrollment.enrollments SET next_due_at = NULL WHERE enrollment_id = :id"),
        {"id": event.enrollment_id},
    )


# --- the suppression list ----------------------------------------------------------------------


@projector.on(AddressSuppressed)
async def address_suppressed(event: AddressSuppressed, d: Delivery) -> None:
    await d.conn.execute(
        text("INSERT INTO enrollment.suppressions (suppression_id, workspace_id, value, kind,"
             " reason, note, added_at) VALUES (:suppression_id, :ws, :value, :kind, :reason,"
             " :note, :added_at) ON CONFLICT DO NOTHING"),
        {**event.model_dump(), "ws": d.envelope.workspace_id},
    )


@projector.on(SuppressionRemoved)
async def suppression_removed(event: SuppressionRemoved, d: Delivery) -> None:
    await d.conn.execute(
        text("DELETE FROM enrollment.suppressions WHERE suppression_id = :id"),
        {"id": event.suppression_id},
    )
