"""`ListContactEnrollments` (the contact card): every enrollment of one contact in every
sequence, the latest first, a page at a time, and nothing of another workspace."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import text

from contracts.commands import ListContactEnrollments, Page
from sequences.messaging.rpc import Rejected
from services.enrollment.queries import EnrollmentQueries

WS, OTHER = uuid.uuid4(), uuid.uuid4()
T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)


async def _sequence(conn, workspace_id, name, state="live") -> uuid.UUID:
    sequence_id = uuid.uuid4()
    await conn.execute(text(
        "INSERT INTO enrollment.sequences (sequence_id, workspace_id, name, sender_name,"
        " sender_email, timezone, send_policy, steps, state, created_at) VALUES (:id, :ws,"
        " :name, 'S', 's@x.example', 'Asia/Seoul', '{}', '[]', :state, :at)"),
        {"id": sequence_id, "ws": workspace_id, "name": name, "state": state, "at": T0})
    return sequence_id


async def _contact(conn, workspace_id, email) -> uuid.UUID:
    contact_id = uuid.uuid4()
    await conn.execute(text(
        "INSERT INTO enrollment.contacts (contact_id, workspace_id, name, company, job_title,"
        " owner_name, email, phone, status, tags, lists, created_at, updated_at) VALUES (:id,"
        " :ws, 'Kim', '', '', '', :email, '', '', '{}', '{}', :at, :at)"),
        {"id": contact_id, "ws": workspace_id, "email": email, "at": T0})
    return contact_id


async def _enrollment(conn, workspace_id, sequence_id, contact_id, status, at) -> uuid.UUID:
    enrollment_id = uuid.uuid4()
    await conn.execute(text(
        "INSERT INTO enrollment.enrollments (enrollment_id, workspace_id, sequence_id,"
        " contact_id, attempt, email, contact_name, contact_email, status, current_step, sends,"
        " enrolled_at, last_activity_at) VALUES (:id, :ws, :seq, :contact, 1, 'k@x.example',"
        " 'Kim', 'k@x.example', :status, 0, 0, :at, :at)"),
        {"id": enrollment_id, "ws": workspace_id, "seq": sequence_id, "contact": contact_id,
         "status": status, "at": at})
    return enrollment_id


@pytest.mark.integration
async def test_every_enrollment_of_a_contact_latest_first_in_pages_and_only_its_workspace(
        engine):
    async with engine.begin() as conn:
        quote = await _sequence(conn, WS, "Quote")
        nurture = await _sequence(conn, WS, "Nurture", state="paused")
        theirs = await _sequence(conn, OTHER, "Theirs")
        kim = await _contact(conn, WS, "kim@x.example")
        lee = await _contact(conn, WS, "lee@x.example")
        rival = await _contact(conn, OTHER, "kim@x.example")
        first = await _enrollment(conn, WS, quote, kim, "done", T0)
        second = await _enrollment(conn, WS, nurture, kim, "active", T0 + timedelta(days=1))
        again = await _enrollment(conn, WS, quote, kim, "replied", T0 + timedelta(days=2))
        await _enrollment(conn, WS, quote, lee, "active", T0)
        await _enrollment(conn, OTHER, theirs, rival, "active", T0)
    queries = EnrollmentQueries(SimpleNamespace(engine=engine))

    page = await queries.list_contact_enrollments(
        ListContactEnrollments(workspace_id=WS, contact_id=kim, page=Page(limit=2)))
    assert [e.enrollment_id for e in page.items] == [again, second]
    assert [(e.sequence_name, e.sequence_state, e.status) for e in page.items] == [
        ("Quote", "live", "replied"), ("Nurture", "paused", "active")]
    rest = await queries.list_contact_enrollments(ListContactEnrollments(
        workspace_id=WS, contact_id=kim, page=Page(limit=2, cursor=page.next_cursor)))
    assert [e.enrollment_id for e in rest.items] == [first] and rest.next_cursor is None

    with pytest.raises(Rejected) as elsewhere:  # another workspace's contact: as unknown
        await queries.list_contact_enrollments(
            ListContactEnrollments(workspace_id=WS, contact_id=rival))
    assert elsewhere.value.problem.status == 404
    with pytest.raises(Rejected):
        await queries.list_contact_enrollments(
            ListContactEnrollments(workspace_id=OTHER, contact_id=kim))
