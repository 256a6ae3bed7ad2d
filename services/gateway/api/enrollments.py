"""Enrollments: one contact or a whole segment into a sequence, the enrollee table, one
enrollment, its timeline, stop and retry."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request

from contracts import commands as c
from contracts.views import (
    BulkEnrollmentResult,
    Created,
    EnrollmentPage,
    EnrollmentStatus,
    EnrollmentView,
    Timeline,
)
from services.gateway.api.deps import KEY_REQUIRED, Cursor, Limit, ask

# no prefix: enrollments live under their sequence and under /v1/enrollments
router = APIRouter(tags=["enrollments"], dependencies=KEY_REQUIRED)


@router.post("/v1/sequences/{sequence_id}/enrollments", status_code=201, response_model=Created)
async def enroll(sequence_id: uuid.UUID, body: c.EnrollmentRequest, request: Request):
    """Enroll one contact: the first step is planned at once. A contact already active in the
    sequence is refused (409); one whose enrollment ended needs `reenroll: true`."""
    return await ask(request, c.EnrollContact, sequence_id=sequence_id, **body.model_dump())


@router.post("/v1/sequences/{sequence_id}/enrollments/bulk", response_model=BulkEnrollmentResult)
async def enroll_segment(sequence_id: uuid.UUID, body: c.BulkEnrollmentRequest, request: Request):
    """Enroll everyone with a status, tag or list (or all contacts) at once. Answers how many
    were enrolled, skipped as already active, excluded as opted out, and excluded as
    suppressed (their address or its domain is on the suppression list)."""
    return await ask(request, c.EnrollSegment, sequence_id=sequence_id, **body.model_dump())


@router.get("/v1/sequences/{sequence_id}/enrollments", response_model=EnrollmentPage)
async def list_enrollments(
    sequence_id: uuid.UUID,
    request: Request,
    status: EnrollmentStatus | None = None,
    sort: c.EnrolleeSort = "enrolled_at",
    descending: bool = False,
    limit: Limit = 50,
    cursor: Cursor = None,
):
    """The enrollee table: status, current step, sends, opens, last activity, next due."""
    return await ask(request, c.ListEnrollments, sequence_id=sequence_id, status=status,
                     sort=sort, descending=descending, page=c.Page(limit=limit, cursor=cursor))


@router.get("/v1/enrollments/{enrollment_id}", response_model=EnrollmentView)
async def get_enrollment(enrollment_id: uuid.UUID, request: Request):
    return await ask(request, c.GetEnrollment, enrollment_id=enrollment_id)


@router.get("/v1/enrollments/{enrollment_id}/timeline", response_model=Timeline)
async def get_timeline(enrollment_id: uuid.UUID, request: Request):
    """Every event of the enrollment, in order, with what caused it: why an email did or did
    not go out."""
    return await ask(request, c.GetTimeline, enrollment_id=enrollment_id)


@router.post("/v1/enrollments/{enrollment_id}/stop", response_model=EnrollmentView)
async def stop_enrollment(enrollment_id: uuid.UUID, request: Request,
                          body: c.StopRequest | None = None):
    """Stop by hand (optionally saying why): no further step runs."""
    reason = body.reason if body else None
    await ask(request, c.StopEnrollment, enrollment_id=enrollment_id, reason=reason)
    return await ask(request, c.GetEnrollment, enrollment_id=enrollment_id)


@router.post("/v1/enrollments/{enrollment_id}/retry", response_model=EnrollmentView)
async def retry_enrollment(enrollment_id: uuid.UUID, request: Request):
    """Try the held step again (after fixing the contact's data or the mailbox)."""
    await ask(request, c.RetryEnrollment, enrollment_id=enrollment_id)
    return await ask(request, c.GetEnrollment, enrollment_id=enrollment_id)


@router.post("/v1/enrollments/{enrollment_id}/resume", response_model=EnrollmentView)
async def resume_enrollment(enrollment_id: uuid.UUID, request: Request):
    """End a pause (out of office, a colleague's reply) now; 409 when it is not paused."""
    await ask(request, c.ResumeEnrollment, enrollment_id=enrollment_id)
    return await ask(request, c.GetEnrollment, enrollment_id=enrollment_id)
