"""Sequence detail: the header (name, state, "N enrolled · live", counts per status) and its
tabs: Steps (each with its counts, people's and machines' opens and clicks apart, and its
A/B variants), Stats (the analytics of a date range, rates with their formulas), Enrollees (filter, sort, pages, stop, retry; the rows
refresh themselves), Schedule (when each step would go out from a chosen start) and Settings
(the builder's partial). Every tab is a link (`?tab=`), so all of it works without script."""

from __future__ import annotations

import asyncio

import uuid
from datetime import date, timedelta
from typing import Annotated, Literal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import Form, Query, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError

from contracts import commands as c
from contracts.views import (
    EnrolleeTable,
    EnrollmentStatus,
    EnrollmentView,
    SchedulePreview,
    SequenceAnalytics,
    SequenceStepStats,
    SequenceView,
)
from services.gateway.bus import ProblemError, problem
from services.gateway.web import forms
from services.gateway.web.pages import ask, now, page_router
from services.gateway.web.session import SignedIn
from services.gateway.web.templating import render, texts_for

router = page_router()
PAGE_SIZE = 50
MOST_SELECTED = 200  # enrollees stopped at once (a page holds 50)
Tab = Literal["steps", "stats", "enrollees", "schedule", "settings"]
StatusFilter = EnrollmentStatus | Literal[""]
Cursor = Annotated[str | None, Query(max_length=500)]
Selected = Annotated[list[uuid.UUID], Query(max_length=MOST_SELECTED)]
SORTS = ("enrolled_at", "last_activity_at", "next_due_at", "contact_name", "status")
# who can still be stopped, and retried
STOPPABLE = (EnrollmentStatus.active, EnrollmentStatus.needs_attention)


async def sequence_of(request: Request, sequence_id: uuid.UUID) -> SequenceView:
    return SequenceView.model_validate(await ask(request, c.GetSequence, sequence_id=sequence_id))


class Listing:
    """The enrollee table's filter, sort and page, as the query string carries them."""

    def __init__(self, status: str, sort: str, descending: bool, cursor: str | None):
        self.status, self.sort, self.descending, self.cursor = status, sort, descending, cursor

    def query(self, **more) -> str:
        """This listing's query string; `more` adds to it or replaces (None: leaves out)."""
        values = {"status": self.status, "sort": self.sort,
                  "descending": "1" if self.descending else "0", "cursor": self.cursor, **more}
        return urlencode({k: v for k, v in values.items() if v is not None})


async def _enrollee_table(request: Request, sequence_id: uuid.UUID,
                          listing: Listing) -> EnrolleeTable:
    """The sequence and the page of its enrollees, in one request."""
    return EnrolleeTable.model_validate(await ask(
        request, c.GetEnrolleeTable, sequence_id=sequence_id, status=listing.status or None,
        sort=listing.sort, descending=listing.descending,
        page=c.Page(limit=PAGE_SIZE, cursor=listing.cursor)))


@router.get("/sequences/{sequence_id}")
async def detail(request: Request, user: SignedIn, sequence_id: uuid.UUID, tab: Tab = "steps",
                 status: StatusFilter = "", sort: c.EnrolleeSort = "enrolled_at",
                 descending: bool = False, cursor: Cursor = None,
                 start: Annotated[str | None, Query(max_length=40)] = None,
                 stopped: Annotated[int | None, Query(ge=0, le=MOST_SELECTED)] = None,
                 since: Annotated[str | None, Query(alias="from", max_length=10)] = None,
                 until: Annotated[str | None, Query(alias="to", max_length=10)] = None,
                 winner: Annotated[Literal["A", "B", "C"] | None, Query()] = None):
    context: dict = {"tab": tab, "stopped": stopped, "chosen_winner": winner}
    # the sequence and the tab's rows are asked at once (two services' round trips overlap)
    if tab == "steps":
        today = (await now(request)).date()  # every day so far: the Steps tab counts all
        sequence, stats, analytics = await asyncio.gather(
            sequence_of(request, sequence_id),
            ask(request, c.GetStepStats, sequence_id=sequence_id),
            ask(request, c.GetSequenceAnalytics, sequence_id=sequence_id,
                since=today - timedelta(days=3650), until=today + timedelta(days=1)))
        context["stats"] = SequenceStepStats.model_validate(stats)
        context["analytics"] = SequenceAnalytics.model_validate(analytics)
    elif tab == "stats":
        sequence = await sequence_of(request, sequence_id)
        context.update(await _stats(request, sequence_id, since, until))
    elif tab == "enrollees":
        listing = Listing(status, sort, descending, cursor)
        table = await _enrollee_table(request, sequence_id, listing)
        sequence, page = table.sequence, table.page
        context.update(listing=listing, page=page, selected=set(), sorts=SORTS,
                       statuses=list(EnrollmentStatus))
    else:
        sequence = await sequence_of(request, sequence_id)
    context["sequence"] = sequence
    if tab == "schedule":
        context.update(await _schedule(request, sequence, start))
    return render(request, "sequence/detail.html", status_code=422 if context.get(
        "errors") else 200, **context)


@router.get("/sequences/{sequence_id}/enrollees")
async def enrollee_rows(request: Request, user: SignedIn, sequence_id: uuid.UUID,
                        status: StatusFilter = "", sort: c.EnrolleeSort = "enrolled_at",
                        descending: bool = False, cursor: Cursor = None,
                        enrollment_id: Selected = []):
    """The rows of the enrollee table (what htmx polls), with the header's counts and the pager
    swapped out of band. The ids the reader has checked come along and stay checked."""
    listing = Listing(status, sort, descending, cursor)
    table = await _enrollee_table(request, sequence_id, listing)
    if request.headers.get("hx-request") != "true":  # (another workspace's id: 404 above)
        return RedirectResponse(f"/sequences/{sequence_id}?tab=enrollees&{listing.query()}",
                                status_code=303)
    return render(request, "sequence/_enrollee_rows.html", sequence=table.sequence,
                  listing=listing, page=table.page,
                  selected={str(i) for i in enrollment_id}, out_of_band=True)


async def _stats(request: Request, sequence_id: uuid.UUID, since: str | None,
                 until: str | None) -> dict:
    """The Stats tab: the analytics of a date range (default: the last 30 days), or the
    range's error next to its field."""
    last = (await now(request)).date()
    try:
        until_day = date.fromisoformat(until) if until else last
        since_day = date.fromisoformat(since) if since else until_day - timedelta(days=30)
        query = c.GetSequenceAnalytics(workspace_id=uuid.UUID(int=0), sequence_id=sequence_id,
                                       since=since_day, until=until_day)
    except (ValueError, ValidationError):
        texts = texts_for(request)
        return {"since": since or "", "until": until or "", "errors": {
            "to": texts.gettext("Choose a start day on or before the end day (YYYY-MM-DD).")}}
    analytics = await ask(request, c.GetSequenceAnalytics, sequence_id=sequence_id,
                          since=query.since, until=query.until)
    return {"since": str(query.since), "until": str(query.until),
            "analytics": SequenceAnalytics.model_validate(analytics)}


async def _schedule(request: Request, sequence: SequenceView, start: str | None) -> dict:
    """When each step would go out from `start` (read in the sequence's zone; default now)."""
    try:
        preview = await ask(request, c.PreviewSchedule, sequence_id=sequence.sequence_id,
                            start=start or None)
    except ValidationError as error:
        return {"errors": forms.validation_errors(error, texts_for(request).gettext),
                "start": start}
    except ProblemError as error:
        if error.problem.status != 422:
            raise
        return {"errors": {"start": forms.errors_of(error.problem).get(
            "start", error.problem.detail or "")}, "start": start}
    preview = SchedulePreview.model_validate(preview)
    local_start = preview.start.astimezone(ZoneInfo(sequence.timezone))
    return {"schedule": preview, "start": local_start.strftime("%Y-%m-%dT%H:%M"), "errors": {}}


# --- stopping and retrying ---------------------------------------------------------------------


def _back(sequence_id: uuid.UUID, listing: Listing, **more) -> str:
    return f"/sequences/{sequence_id}?tab=enrollees&{listing.query(**more)}"


@router.get("/sequences/{sequence_id}/stop")
async def confirm_stop(request: Request, user: SignedIn, sequence_id: uuid.UUID,
                       enrollment_id: Selected = [], status: StatusFilter = "",
                       sort: c.EnrolleeSort = "enrolled_at", descending: bool = False,
                       cursor: Cursor = None):
    """Stopping asks first: who would be stopped (one, or every one checked), and how many."""
    sequence = await sequence_of(request, sequence_id)
    chosen = await _stoppable(request, sequence_id, enrollment_id)
    return render(request, "sequence/confirm_stop.html", sequence=sequence, chosen=chosen,
                  back=_back(sequence_id, Listing(status, sort, descending, cursor)))


async def _stoppable(request: Request, sequence_id: uuid.UUID,
                     ids: list[uuid.UUID]) -> list[EnrollmentView]:
    """The enrollments of `ids` that are this sequence's and can still be stopped."""
    chosen = []
    for enrollment_id in dict.fromkeys(ids):
        try:
            enrollment = EnrollmentView.model_validate(
                await ask(request, c.GetEnrollment, enrollment_id=enrollment_id))
        except ProblemError as error:
            if error.problem.status != 404:
                raise
            continue
        if enrollment.sequence_id == sequence_id and enrollment.status in STOPPABLE:
            chosen.append(enrollment)
    return chosen


Back = Annotated[str, Form(max_length=2000)]


@router.post("/sequences/{sequence_id}/stop")
async def stop(request: Request, user: SignedIn, sequence_id: uuid.UUID,
               enrollment_id: Annotated[list[uuid.UUID], Form(max_length=MOST_SELECTED)] = [],
               status: Annotated[StatusFilter, Form()] = "",
               sort: Annotated[c.EnrolleeSort, Form()] = "enrolled_at",
               descending: Annotated[bool, Form()] = False):
    await sequence_of(request, sequence_id)
    stopped = 0
    for enrollment in await _stoppable(request, sequence_id, enrollment_id):
        try:
            await ask(request, c.StopEnrollment, enrollment_id=enrollment.enrollment_id,
                      reason="stopped by hand")
        except ProblemError as error:
            if error.problem.status != 409:  # it ended meanwhile: nothing left to stop
                raise
            continue
        stopped += 1
    return RedirectResponse(_back(sequence_id, Listing(status, sort, descending, None),
                                  stopped=stopped), status_code=303)


@router.post("/sequences/{sequence_id}/enrollees/{enrollment_id}/retry")
async def retry(request: Request, user: SignedIn, sequence_id: uuid.UUID,
                enrollment_id: uuid.UUID, status: Annotated[StatusFilter, Form()] = "",
                sort: Annotated[c.EnrolleeSort, Form()] = "enrolled_at",
                descending: Annotated[bool, Form()] = False):
    """Try a held step again (needs attention), after its cause was fixed."""
    [enrollment] = await _stoppable(request, sequence_id, [enrollment_id]) or [None]
    if enrollment is None:
        raise problem(404, "enrollment_id", f"no such enrollment to retry: {enrollment_id}")
    await ask(request, c.RetryEnrollment, enrollment_id=enrollment_id)
    return RedirectResponse(_back(sequence_id, Listing(status, sort, descending, None)),
                            status_code=303)


Letter = Literal["A", "B", "C"]


@router.get("/sequences/{sequence_id}/winner")
async def confirm_winner(request: Request, user: SignedIn, sequence_id: uuid.UUID,
                         letter: Annotated[Letter, Query()]):
    """Asked first: choosing an A/B winner changes what every new email of the sequence's
    steps with variants says."""
    sequence = await sequence_of(request, sequence_id)
    return render(request, "sequence/confirm_winner.html", sequence=sequence, letter=letter)


@router.post("/sequences/{sequence_id}/winner")
async def choose_winner(request: Request, user: SignedIn, sequence_id: uuid.UUID,
                        letter: Annotated[Letter, Query()]):
    await ask(request, c.ChooseVariantWinner, sequence_id=sequence_id, letter=letter,
              chosen_by=user.email)
    return RedirectResponse(f"/sequences/{sequence_id}?tab=stats&winner={letter}",
                            status_code=303)
