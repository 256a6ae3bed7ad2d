"""The workspace's calendar: its default public holidays and its own skip dates."""

from __future__ import annotations

from fastapi import APIRouter, Request

from contracts import commands as c
from contracts.views import WorkspaceCalendarView
from services.gateway.api.deps import KEY_REQUIRED, ask

router = APIRouter(prefix="/v1/calendar", tags=["calendar"], dependencies=KEY_REQUIRED)


@router.get("", response_model=WorkspaceCalendarView)
async def get_calendar(request: Request):
    """The default holidays (for sequences whose `holidays` is `workspace`) and skip dates."""
    return await ask(request, c.GetWorkspaceCalendar)


@router.put("", response_model=WorkspaceCalendarView)
async def set_calendar(body: c.WorkspaceCalendar, request: Request):
    """Replace the default holidays and the skip dates (a company offsite: nothing goes out that
    day, in any sequence). Pending steps are re-planned; refused (422) when a sequence would be
    left with no sending day in the next 366 days. Send `expected_version` (the `version` of
    the GET) so a concurrent change is refused (409) instead of overwritten."""
    await ask(request, c.SetWorkspaceCalendar, **body.model_dump())
    return await ask(request, c.GetWorkspaceCalendar)
