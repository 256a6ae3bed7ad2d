"""Settings › Calendar: the workspace's default calendar. Its public holidays (a country and an
optional region of the `holidays` package, for sequences whose holidays are "the workspace's
default"), the send window new sequences start with, and the skip dates every sequence keeps
(a company offsite), added and removed one at a time (removing asks first).

Every change goes as `SetWorkspaceCalendar` with the version it was made on
(`expected_version`): a skip date added or removed is applied again on the calendar as it is
now when someone changed it meanwhile (nobody's date is lost); the holidays and window form
says so instead, keeping what was typed, since it replaces what the other person chose."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from typing import Annotated, Any

from fastapi import Form, Query, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError

from contracts import commands as c
from contracts.views import WorkspaceCalendarView
from sequences.i18n import N_
from services.gateway.bus import ProblemError
from services.gateway.web import forms, holiday_choices
from services.gateway.web.pages import ask, page_router
from services.gateway.web.routes.builder import BLOCK_ROWS, WEEKDAYS, _ours, builder_errors
from services.gateway.web.session import SignedIn
from services.gateway.web.templating import language_of, render, texts_for

router = page_router()
Text = Annotated[str, Form(max_length=5000)]
_ATTEMPTS = 30  # a skip-date edit that keeps losing races to other edits is answered as 409
_DAYS_FIELD = "send_window.days"

_CHANGED_MEANWHILE = N_("Someone changed the calendar meanwhile: it is shown as it is now, with"
                        " your choices kept in the form. Save again to apply them.")
_STILL_CHANGING = N_("The calendar kept changing while this was saved: reload the page and try"
                     " again.")
_NOT_A_DATE = N_("Enter a date as YYYY-MM-DD, e.g. 2027-05-01.")
_NOT_SKIPPED = N_("%(date)s is not a skip date.")


async def _calendar(request: Request) -> WorkspaceCalendarView:
    return WorkspaceCalendarView.model_validate(await ask(request, c.GetWorkspaceCalendar))


def _values_of(calendar: WorkspaceCalendarView) -> dict[str, Any]:
    """The form's fields as the saved calendar fills them."""
    window = calendar.send_window
    return {"country": calendar.holidays.country if calendar.holidays else "",
            "subdivision": (calendar.holidays.subdivision or "") if calendar.holidays else "",
            "days": list(window.days) if window else [],
            "blocks": [b.model_dump() for b in window.blocks] if window else [],
            "version": calendar.version}


def _page(request: Request, calendar: WorkspaceCalendarView, status_code: int = 200,
          values: dict | None = None, errors: dict | None = None, **context):
    values = values or _values_of(calendar)
    return render(request, "settings/calendar.html", status_code=status_code,
                  section="calendar", calendar=calendar, values=values, errors=errors or {},
                  countries=holiday_choices.countries(language_of(request)),
                  subdivisions=holiday_choices.subdivisions(values["country"]),
                  weekdays=WEEKDAYS, block_rows=BLOCK_ROWS,
                  skip_dates=sorted(calendar.skip_dates, key=lambda s: s.date), **context)


@router.get("/settings/calendar")
async def calendar(request: Request, user: SignedIn, saved: bool = False,
                   added: str | None = Query(None, max_length=10),
                   removed: str | None = Query(None, max_length=10)):
    return _page(request, await _calendar(request), saved=saved, added=added, removed=removed)


@router.get("/settings/calendar/subdivisions")
async def subdivisions(request: Request, user: SignedIn):
    """The region select for the country chosen (htmx swaps it in when the country changes;
    the builder asks it too)."""
    country = request.query_params.get("holidays.country", "")[:3]
    return render(request, "settings/_subdivision.html",
                  subdivisions=holiday_choices.subdivisions(country))


# --- holidays and the default window ---------------------------------------------------------


def _typed(pairs) -> dict[str, Any]:
    pairs = list(pairs)
    posted = forms.nested((k, v) for k, v in pairs if k not in ("csrf_token", _DAYS_FIELD))
    holidays = posted.get("holidays") if isinstance(posted.get("holidays"), dict) else {}
    window = posted.get("send_window") if isinstance(posted.get("send_window"), dict) else {}
    blocks = window.get("blocks") if isinstance(window.get("blocks"), list) else []
    version = str(posted.get("version") or "")
    return {"country": str(holidays.get("country") or "").strip().upper(),
            "subdivision": str(holidays.get("subdivision") or "").strip(),
            "days": [v for k, v in pairs if k == _DAYS_FIELD and v in WEEKDAYS],
            "blocks": [{"start": str(b.get("start") or "").strip(),
                        "end": str(b.get("end") or "").strip()}
                       for b in blocks[:BLOCK_ROWS] if isinstance(b, dict)],
            "version": int(version) if version.isdigit() else None}


def _window_body(values: dict) -> dict | None:
    """No day and no block: new sequences start without a window (a send time)."""
    blocks = [b for b in values["blocks"] if b["start"] or b["end"]]
    if not values["days"] and not blocks:
        return None
    return {"days": values["days"], "blocks": blocks}


def _service_errors(request: Request, problem) -> dict[str, str]:
    gettext = texts_for(request).gettext
    found: dict[str, str] = {}
    for field, message in forms.errors_of(problem).items():
        where = field if field in ("holidays", "skip_dates") or field.startswith(
            "send_window") else ""
        found.setdefault(where, _ours(where, message, gettext) or message)
    return found


@router.post("/settings/calendar")
async def save(request: Request, user: SignedIn):
    """The holidays and the default window, on the skip dates as they are now."""
    values = _typed((await request.form()).multi_items())
    current = await _calendar(request)
    body = {"holidays": {"country": values["country"], "subdivision":
                         holiday_choices.subdivision_code(values["country"], values["subdivision"])}
            if values["country"] else None,
            "skip_dates": [s.model_dump() for s in current.skip_dates],
            "send_window": _window_body(values), "expected_version": values["version"]}
    try:
        checked = c.WorkspaceCalendar.model_validate(body)
        await ask(request, c.SetWorkspaceCalendar, **checked.model_dump())
    except ValidationError as error:
        errors = builder_errors(error, body, texts_for(request).gettext)
        return _page(request, current, 422, values=values, errors=_holidays_at_country(errors))
    except ProblemError as refused:
        if refused.problem.status not in (409, 422):
            raise
        errors = _service_errors(request, refused.problem)
        if "expected_version" in {e.field for e in refused.problem.errors}:
            errors = {"": texts_for(request).gettext(_CHANGED_MEANWHILE)}
            values = {**values, "version": current.version}
        return _page(request, current, refused.problem.status, values=values, errors=errors)
    return RedirectResponse("/settings/calendar?saved=1", status_code=303)


def _holidays_at_country(errors: dict) -> dict:
    return {("holidays" if k.startswith("holidays") else k): v for k, v in errors.items()}


# --- skip dates -----------------------------------------------------------------------------


async def _edit_skip_dates(request: Request, edit) -> WorkspaceCalendarView | None:
    """Apply `edit(skip_dates) -> skip_dates | None` to the calendar as it is now, again when
    someone changed it meanwhile. None when `edit` declined (nothing to do); the calendar
    as it was when saved otherwise."""
    lost = None
    for attempt in range(_ATTEMPTS):
        current = await _calendar(request)
        wanted = edit(list(current.skip_dates))
        if wanted is None:
            return None
        try:
            await ask(request, c.SetWorkspaceCalendar, holidays=current.holidays,
                      skip_dates=wanted, send_window=current.send_window,
                      expected_version=current.version)
            return current
        except ProblemError as refused:
            if "expected_version" not in {e.field for e in refused.problem.errors}:
                raise
            lost = refused.problem
            # apart from the other editors, a little longer each time (they all retry too)
            await asyncio.sleep(random.uniform(0, 0.05 * (attempt + 1)))
    raise ProblemError(lost)


@router.post("/settings/calendar/skip-dates")
async def add_skip_date(request: Request, user: SignedIn, date: Text = "", name: Text = ""):
    typed = {"date": date.strip(), "name": name.strip()}
    gettext = texts_for(request).gettext
    try:
        skip = c.SkipDate.model_validate(typed)
    except ValidationError as error:
        errors = forms.validation_errors(error, gettext)
        if "date" in errors:
            errors["date"] = str(gettext(_NOT_A_DATE))
        return _page(request, await _calendar(request), 422, skip_values=typed,
                     skip_errors=errors)

    def added(skip_dates: list) -> list:
        return [s for s in skip_dates if s.date != skip.date] + [skip]
    try:
        await _edit_skip_dates(request, added)
    except ProblemError as refused:
        if refused.problem.status not in (409, 422):
            raise
        errors = _service_errors(request, refused.problem)
        message = errors.get("skip_dates") or errors.get("")
        if refused.problem.status == 409:
            message = str(gettext(_STILL_CHANGING))
        return _page(request, await _calendar(request), refused.problem.status,
                     skip_values=typed, skip_errors={"date": message})
    return RedirectResponse(f"/settings/calendar?added={skip.date.isoformat()}#skip-dates",
                            status_code=303)


def _day(value: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


@router.get("/settings/calendar/skip-dates/remove")
async def confirm_remove(request: Request, user: SignedIn,
                         day: Annotated[str, Query(alias="date", max_length=10)]):
    calendar = await _calendar(request)
    found = next((s for s in calendar.skip_dates if s.date == _day(day)), None)
    if found is None:
        return _page(request, calendar, 404, errors={"": texts_for(request).gettext(
            _NOT_SKIPPED, date=day)})
    return render(request, "settings/confirm_skip_date.html", section="calendar", skip=found)


@router.post("/settings/calendar/skip-dates/remove")
async def remove_skip_date(request: Request, user: SignedIn,
                           day: Annotated[str, Query(alias="date", max_length=10)]):
    wanted = _day(day)

    def removed(skip_dates: list) -> list | None:
        kept = [s for s in skip_dates if s.date != wanted]
        return kept if len(kept) < len(skip_dates) else None
    try:
        done = await _edit_skip_dates(request, removed)
    except ProblemError as refused:
        if refused.problem.status != 409:
            raise
        return _page(request, await _calendar(request), 409,
                     errors={"": texts_for(request).gettext(_STILL_CHANGING)})
    if done is None:
        return _page(request, await _calendar(request), 404, errors={"": texts_for(
            request).gettext(_NOT_SKIPPED, date=day)})
    return RedirectResponse(f"/settings/calendar?removed={day}#skip-dates", status_code=303)
