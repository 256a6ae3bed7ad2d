"""Enrollment service: answers to queries, read from its read models (and, for timelines, the
log itself)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

from sqlalchemy import text

from contracts.base import stream_id
from contracts.commands import (
    GetSequenceAnalytics,
    GetContact,
    GetEnrolleeTable,
    GetEnrollment,
    GetSequence,
    GetStepStats,
    GetTimeline,
    ListContactEnrollments,
    ListContacts,
    ListEnrollments,
    ListSenderAddresses,
    ListSequences,
    ListSuppressions,
    ListTasks,
)
from contracts.views import (
    VariantWinnerView,
    SequenceAnalytics,
    ContactEnrollmentPage,
    ContactEnrollmentView,
    ContactPage,
    ContactView,
    EnrolleeTable,
    EnrollmentPage,
    EnrollmentStatus,
    EnrollmentView,
    SequencePage,
    SequenceStepStats,
    SequenceView,
    StepFlag,
    StepStats,
    SuppressionPage,
    SuppressionView,
    TaskPage,
    TaskView,
    Timeline,
    TimelineEntry,
)
from sequences.bootstrap import Runtime
from sequences.messaging.rpc import Rejected
from sequences.pagination import decode_cursor, page_of
from services.enrollment import search
from services.enrollment.analytics import analytics_view
from services.enrollment.timeline import summarize

# sort key of the enrollee table: SQL expression and the type its cursor value is cast to
_ENROLLEE_SORTS = {
    "enrolled_at": ("enrolled_at", "timestamptz"),
    "last_activity_at": ("last_activity_at", "timestamptz"),
    "next_due_at": ("coalesce(next_due_at, 'infinity')", "timestamptz"),
    "contact_name": ("contact_name", "text"),
    "status": ("status", "text"),
}
# a contact's columns as the API shows it (not what it is searched by)
_CONTACT_VIEW = ", ".join(name for name in ContactView.model_fields if name != "suppressed")
_SUPPRESSION_OF = text(
    "SELECT value, kind, reason, note, added_at FROM enrollment.suppressions"
    " WHERE workspace_id = :ws AND value IN (lower(:email), split_part(lower(:email), '@', 2))"
    " ORDER BY kind LIMIT 1")  # the address before its domain
# every stream that tells part of one enrollment's story (and its tasks', `task-<task id>`)
_TIMELINE_CATEGORIES = ("enrollment", "schedule", "delivery", "inbox", "bounce")


class EnrollmentQueries:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    async def _rows(self, sql: str, params: dict) -> list[dict]:
        async with self.runtime.engine.connect() as conn:
            return [dict(row) for row in (await conn.execute(text(sql), params)).mappings()]

    async def _one(self, sql: str, workspace_id: uuid.UUID, key: uuid.UUID, field: str) -> dict:
        """The row of `key` in the workspace (`:ws`); another workspace's is as absent."""
        rows = await self._rows(sql, {"id": key, "ws": workspace_id})
        if not rows:
            raise Rejected(404, f"no such {field.removesuffix('_id')}: {key}", field)
        return rows[0]

    # --- sequences --------------------------------------------------------------------------

    async def get_sequence(self, query: GetSequence) -> SequenceView:
        row = await self._one(f"SELECT {_SEQUENCE} WHERE sequence_id = :id AND workspace_id = :ws",
                              query.workspace_id, query.sequence_id, "sequence_id")
        return (await self._views([row]))[0]

    async def list_sequences(self, query: ListSequences) -> SequencePage:
        after = _after(query.page.cursor, "(created_at, sequence_id)", "timestamptz")
        rows = await self._rows(
            f"SELECT {_SEQUENCE} WHERE workspace_id = :ws AND {after.sql}"
            " ORDER BY created_at, sequence_id LIMIT :limit",
            {**after.params, "ws": query.workspace_id, "limit": query.page.limit + 1},
        )
        rows, cursor = page_of(rows, query.page.limit, lambda r: [r["created_at"], r["sequence_id"]])
        return SequencePage(items=await self._views(rows), next_cursor=cursor)

    async def _views(self, rows: list[dict]) -> list[SequenceView]:
        """With the steps flagged by content-side bounces (the counts come with each row)."""
        flags = await self._rows("SELECT * FROM enrollment.step_flags"
                                 " WHERE sequence_id = ANY(:ids) ORDER BY flagged_at",
                                 {"ids": [row["sequence_id"] for row in rows]})
        return [_sequence(row, [StepFlag(**f) for f in flags
                                if f["sequence_id"] == row["sequence_id"]]) for row in rows]

    # --- the suppression list ---------------------------------------------------------------

    async def list_suppressions(self, query: ListSuppressions) -> SuppressionPage:
        """Newest first, by (added_at, suppression_id)."""
        after = _after(query.page.cursor, "(added_at, suppression_id)", "timestamptz",
                       descending=True)
        where = ["workspace_id = :ws", after.sql]
        params = {**after.params, "ws": query.workspace_id, "limit": query.page.limit + 1}
        if query.q:
            where.append("value LIKE lower(:q)")
            params["q"] = f"%{_escape_like(query.q)}%"
        rows = await self._rows(
            f"SELECT * FROM enrollment.suppressions WHERE {' AND '.join(where)}"
            " ORDER BY added_at DESC, suppression_id DESC LIMIT :limit", params)
        rows, cursor = page_of(rows, query.page.limit,
                               lambda r: [r["added_at"], r["suppression_id"]])
        return SuppressionPage(items=[SuppressionView(**r) for r in rows], next_cursor=cursor)

    # --- contacts ---------------------------------------------------------------------------

    async def get_contact(self, query: GetContact) -> ContactView:
        contact = ContactView(**await self._one(
            f"SELECT {_CONTACT_VIEW} FROM enrollment.contacts"
            " WHERE contact_id = :id AND workspace_id = :ws AND NOT deleted",
            query.workspace_id, query.contact_id, "contact_id"))
        if contact.email:
            async with self.runtime.engine.connect() as conn:
                row = (await conn.execute(_SUPPRESSION_OF, {
                    "ws": query.workspace_id, "email": contact.email})).mappings().first()
            contact.suppressed = SuppressionView(**row) if row else None
        return contact

    async def list_contacts(self, query: ListContacts) -> ContactPage:
        clauses = ["workspace_id = :ws", "NOT deleted"]
        params = {"ws": query.workspace_id, "limit": query.page.limit + 1}
        if query.q:
            # in the name, company or email, ignoring case (services/enrollment/search.py): the
            # bigrams narrow the rows down by their index, LIKE on the lowered text decides
            clauses.append("search LIKE lower(:q)")
            params["q"] = f"%{_escape_like(query.q)}%"
            if (grams := search.query_grams(query.q)) is not None:
                clauses.append("search_grams @> CAST(:grams AS text[])")
                params["grams"] = grams
        for column in ("status", "tag", "list"):
            if (value := getattr(query, column)) is not None:
                # tags and lists: @> is what their GIN indexes answer (= ANY is not)
                clauses.append(f"{column} = :{column}" if column == "status"
                               else f"{column}s @> ARRAY[CAST(:{column} AS text)]")
                params[column] = value
        after = _after(query.page.cursor, "(created_at, contact_id)", "timestamptz")
        rows = await self._rows(
            f"SELECT {_CONTACT_VIEW} FROM enrollment.contacts"
            f" WHERE {' AND '.join(clauses)} AND {after.sql}"
            " ORDER BY created_at, contact_id LIMIT :limit",
            {**params, **after.params},
        )
        rows, cursor = page_of(rows, query.page.limit, lambda r: [r["created_at"], r["contact_id"]])
        return ContactPage(items=[ContactView(**r) for r in rows], next_cursor=cursor)

    async def list_contact_enrollments(self, query: ListContactEnrollments
                                       ) -> ContactEnrollmentPage:
        """Every enrollment of one contact in every sequence (the contact card), the latest
        first, with the sequence's name and state."""
        await self._one("SELECT 1 FROM enrollment.contacts"
                        " WHERE contact_id = :id AND workspace_id = :ws AND NOT deleted",
                        query.workspace_id, query.contact_id, "contact_id")
        after = _after(query.page.cursor, "(e.enrolled_at, e.enrollment_id)", "timestamptz",
                       descending=True)
        rows = await self._rows(
            "SELECT e.*, s.name AS sequence_name, s.state AS sequence_state"
            " FROM enrollment.enrollments e"
            " JOIN enrollment.sequences s ON s.sequence_id = e.sequence_id"
            f" WHERE e.contact_id = :contact_id AND e.workspace_id = :ws AND {after.sql}"
            " ORDER BY e.enrolled_at DESC, e.enrollment_id DESC LIMIT :limit",
            {"contact_id": query.contact_id, "ws": query.workspace_id,
             "limit": query.page.limit + 1, **after.params},
        )
        rows, cursor = page_of(rows, query.page.limit,
                               lambda r: [r["enrolled_at"], r["enrollment_id"]])
        return ContactEnrollmentPage(items=[ContactEnrollmentView(**r) for r in rows],
                                     next_cursor=cursor)

    # --- enrollments ------------------------------------------------------------------------

    async def get_enrollment(self, query: GetEnrollment) -> EnrollmentView:
        return _enrollment(await self._one(
            f"SELECT e.*, {_COMPANY} FROM enrollment.enrollments e"
            " WHERE enrollment_id = :id AND workspace_id = :ws",
            query.workspace_id, query.enrollment_id, "enrollment_id"))

    async def list_enrollments(self, query: ListEnrollments) -> EnrollmentPage:
        """The enrollee table of a sequence: filtered by status, sorted, a page at a time."""
        await self._one("SELECT 1 FROM enrollment.sequences"
                        " WHERE sequence_id = :id AND workspace_id = :ws",
                        query.workspace_id, query.sequence_id, "sequence_id")
        return await self._enrollees(query)

    async def get_enrollee_table(self, query: GetEnrolleeTable) -> EnrolleeTable:
        """The sequence (which finds another workspace's as absent) and the page, read at once."""
        sequence, page = await asyncio.gather(
            self.get_sequence(GetSequence(workspace_id=query.workspace_id,
                                          sequence_id=query.sequence_id)),
            self._enrollees(query))
        return EnrolleeTable(sequence=sequence, page=page)

    async def _enrollees(self, query: ListEnrollments) -> EnrollmentPage:
        expression, cast = _ENROLLEE_SORTS[query.sort]
        direction = "DESC" if query.descending else "ASC"
        after = _after(query.page.cursor, f"({expression}, enrollment_id)", cast,
                       query.descending)
        status = "AND status = :status" if query.status else ""
        rows = await self._rows(
            f"SELECT e.*, {expression} AS sort_key, {_COMPANY} FROM enrollment.enrollments e"
            f" WHERE sequence_id = :sequence_id {status} AND {after.sql}"
            f" ORDER BY {expression} {direction}, enrollment_id {direction} LIMIT :limit",
            {"sequence_id": query.sequence_id, "status": query.status,
             "limit": query.page.limit + 1, **after.params},
        )
        rows, cursor = page_of(rows, query.page.limit, lambda r: [r["sort_key"], r["enrollment_id"]])
        return EnrollmentPage(items=[_enrollment(r) for r in rows], next_cursor=cursor)

    async def get_sequence_analytics(self, query: GetSequenceAnalytics) -> SequenceAnalytics:
        """From the analytics projection (services/enrollment/analytics.py)."""
        sequence = await self._one("SELECT steps FROM enrollment.sequences"
                                   " WHERE sequence_id = :id AND workspace_id = :ws",
                                   query.workspace_id, query.sequence_id, "sequence_id")
        async with self.runtime.engine.connect() as conn:
            found = await analytics_view(conn, query.workspace_id, query.sequence_id,
                                         [str(step["step_id"]) for step in sequence["steps"]],
                                         query.since, query.until)
            chosen = await self.runtime.store.read_stream(
                conn, stream_id("experiment", query.sequence_id))
        if chosen:  # (the winner's stream holds only VariantWinnerChosen: the last one counts)
            found.winner = VariantWinnerView.model_validate(chosen[-1].data)
        return found

    async def get_step_stats(self, query: GetStepStats) -> SequenceStepStats:
        """Per step now in the sequence: who got it, opened it, and replied or bounced with it
        as their last step."""
        sequence = await self._one("SELECT steps FROM enrollment.sequences"
                                   " WHERE sequence_id = :id AND workspace_id = :ws",
                                   query.workspace_id, query.sequence_id, "sequence_id")
        params = {"sequence_id": query.sequence_id}
        sent = await self._rows(
            "SELECT step_id, count(*) AS n FROM enrollment.step_completions"
            " WHERE sequence_id = :sequence_id GROUP BY step_id", params)
        opened = await self._rows(
            "SELECT o.step_id, count(*) AS n, sum(o.opens) AS opens FROM enrollment.email_opens o"
            " JOIN enrollment.step_completions s USING (enrollment_id, step_id)"
            " WHERE s.sequence_id = :sequence_id GROUP BY o.step_id", params)
        ended = await self._rows(
            "SELECT last_step_id AS step_id, status, count(*) AS n FROM enrollment.enrollments"
            " WHERE sequence_id = :sequence_id AND status IN ('replied', 'bounced')"
            " AND last_step_id IS NOT NULL GROUP BY last_step_id, status", params)
        by_step = {str(r["step_id"]): r for r in sent}
        opens = {str(r["step_id"]): r for r in opened}
        endings = {(str(r["step_id"]), r["status"]): r["n"] for r in ended}
        steps = []
        for index, step in enumerate(sequence["steps"]):
            key = str(step["step_id"])
            steps.append(StepStats(
                step_id=key, step_index=index, channel=step["channel"],
                sent=by_step.get(key, {}).get("n", 0),
                opened=opens.get(key, {}).get("n", 0), opens=opens.get(key, {}).get("opens", 0),
                replied=endings.get((key, "replied"), 0),
                bounced=endings.get((key, "bounced"), 0)))
        return SequenceStepStats(sequence_id=query.sequence_id, steps=steps)

    async def get_timeline(self, query: GetTimeline) -> Timeline:
        """Every event of one enrollment, in log order, with what caused it: the answer to
        "why did (or didn't) this email go out?"."""
        streams = [stream_id(category, query.enrollment_id) for category in _TIMELINE_CATEGORIES]
        tasks = await self._rows("SELECT task_id FROM enrollment.tasks"
                                 " WHERE enrollment_id = :id AND workspace_id = :ws",
                                 {"id": query.enrollment_id, "ws": query.workspace_id})
        streams += [stream_id("task", task["task_id"]) for task in tasks]
        # the sequence's A/B decisions (VariantWinnerChosen) from the enrollment's start on:
        # they decide which variant its later emails are
        sequence = await self._rows("SELECT sequence_id FROM enrollment.enrollments"
                                    " WHERE enrollment_id = :id AND workspace_id = :ws",
                                    {"id": query.enrollment_id, "ws": query.workspace_id})
        experiment = stream_id("experiment", sequence[0]["sequence_id"]) if sequence else ""
        rows = await self._rows(
            "WITH own AS (SELECT position, event_id, type, stream_id, occurred_at,"
            " correlation_id, causation_id, data FROM eventlog.events"
            " WHERE stream_id = ANY(:streams) AND workspace_id = :ws)"
            " SELECT * FROM own UNION ALL"
            " SELECT position, event_id, type, stream_id, occurred_at, correlation_id,"
            " causation_id, data FROM eventlog.events"
            " WHERE stream_id = :experiment AND workspace_id = :ws"
            " AND position > (SELECT min(position) FROM own)"
            " ORDER BY position",
            {"streams": streams, "ws": query.workspace_id, "experiment": experiment},
        )
        if not rows:
            raise Rejected(404, f"no such enrollment: {query.enrollment_id}", "enrollment_id")
        return Timeline(
            enrollment_id=query.enrollment_id,
            entries=[TimelineEntry(**row, summary=summarize(row["type"], row["data"]))
                     for row in rows],
        )

    async def list_sender_addresses(self, query: ListSenderAddresses) -> list[str]:
        rows = await self._rows("SELECT DISTINCT lower(address) AS address FROM"
                                " enrollment.sequences, unnest(mailbox_pool || sender_email)"
                                " AS address WHERE workspace_id = :ws ORDER BY 1",
                                {"ws": query.workspace_id})
        return [row["address"] for row in rows]

    async def list_tasks(self, query: ListTasks) -> TaskPage:
        """Tasks for people (SMS and call steps), per owner and sequence: `open`, `due` (open
        and due by now), `overdue` (open and due more than a day ago), or `all`."""
        now = self.runtime.clock.now()
        clauses = ["workspace_id = :ws"]
        params = {"ws": query.workspace_id, "now": now, "limit": query.page.limit + 1}
        if query.which != "all":
            clauses.append("state = 'open'")
        if query.which == "due":
            clauses.append("due_at <= :now")
        if query.which == "overdue":
            clauses.append("due_at <= :now - interval '1 day'")
        for column in ("owner_name", "sequence_id"):
            if (value := getattr(query, column)) is not None:
                clauses.append(f"{column} = :{column}")
                params[column] = value
        after = _after(query.page.cursor, "(due_at, task_id)", "timestamptz")
        rows = await self._rows(
            f"SELECT * FROM enrollment.tasks WHERE {' AND '.join(clauses + [after.sql])}"
            " ORDER BY due_at, task_id LIMIT :limit", {**params, **after.params})
        rows, cursor = page_of(rows, query.page.limit, lambda r: [r["due_at"], r["task_id"]])
        return TaskPage(items=[TaskView(
            **{k: r[k] for k in TaskView.model_fields if k in r},
            overdue=r["state"] == "open" and r["due_at"] <= now - timedelta(days=1),
        ) for r in rows], next_cursor=cursor)


# a sequence with its enrollees per status, as the projection keeps them counted
# (migrations/0010_enrollment_counts.sql): read, never counted per request
_SEQUENCE = ("s.*, (SELECT jsonb_object_agg(c.status, c.enrollees)"
             " FROM enrollment.enrollment_counts c WHERE c.sequence_id = s.sequence_id) AS counts"
             " FROM enrollment.sequences s")


def _sequence(row: dict, step_flags: list[StepFlag]) -> SequenceView:
    counts = {status.value: 0 for status in EnrollmentStatus}
    counts.update(row.pop("counts") or {})
    return SequenceView(**row, counts=counts, step_flags=step_flags,
                        headline=f"{row['enrolled']:,} enrolled · {row['state']}")


# the contact's company, as it is now (the enrollee table shows it next to the name)
_COMPANY = ("coalesce((SELECT c.company FROM enrollment.contacts c"
            " WHERE c.contact_id = e.contact_id), '') AS contact_company")


def _enrollment(row: dict) -> EnrollmentView:
    return EnrollmentView(**{k: v for k, v in row.items() if k in EnrollmentView.model_fields})


class _After:
    def __init__(self, sql: str, params: dict):
        self.sql, self.params = sql, params


def _after(cursor: str | None, key_sql: str, cast: str, descending: bool = False) -> _After:
    """The keyset condition for rows after the cursor's row."""
    if cursor is None:
        return _After("true", {})
    value, key = decode_cursor(cursor, 2)
    try:
        uuid.UUID(str(key))
        if cast == "timestamptz" and value != "infinity":
            datetime.fromisoformat(str(value))
    except ValueError:
        raise Rejected(422, "not a cursor this list gave out", "cursor") from None
    operator = "<" if descending else ">"
    return _After(f"{key_sql} {operator} (CAST(:cursor_value AS {cast}), CAST(:cursor_key AS uuid))",
                  {"cursor_value": value, "cursor_key": key})


def _escape_like(text_: str) -> str:
    return text_.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
