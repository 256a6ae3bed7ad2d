"""Tasks: the SMS and call steps of sequences waiting for a person (due, overdue, open), mine
or everyone's, marked done or skipped with a note; the contact and the sequence one click away.

"Mine" is the tasks whose contact's owner name (`{{담당자명}}`) is the signed-in user's name:
tasks carry the contact's owner name, not a user. A user without a name is told so and sees
everyone's."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import Form, Query, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError

from contracts import commands as c
from contracts.views import SequenceView, TaskPage, TaskView
from services.gateway.bus import ProblemError
from services.gateway.web.forms import validation_errors
from services.gateway.web.pages import ask, page_router
from services.gateway.web.session import SignedIn
from services.gateway.web.templating import render, texts_for

router = page_router()
PAGE_SIZE = 50
Which = Literal["due", "overdue", "open", "all"]
Whose = Literal["mine", "everyone"]
Cursor = Annotated[str | None, Query(max_length=500)]


def _whose(user, whose: Whose | None) -> Whose:
    if not user.name:
        return "everyone"  # nothing can be "mine" without a name to match
    return whose or "mine"


async def _tasks(request: Request, user, which: Which, whose: Whose,
                 cursor: str | None) -> TaskPage:
    return TaskPage.model_validate(await ask(
        request, c.ListTasks, which=which, owner_name=user.name if whose == "mine" else None,
        page=c.Page(limit=PAGE_SIZE, cursor=cursor)))


async def _sequences(request: Request, tasks: list[TaskView]) -> dict[uuid.UUID, SequenceView]:
    """The sequences of these tasks, by id (each asked once)."""
    ids = list(dict.fromkeys(task.sequence_id for task in tasks))
    found = await asyncio.gather(*(ask(request, c.GetSequence, sequence_id=i) for i in ids),
                                 return_exceptions=True)
    return {i: SequenceView.model_validate(s) for i, s in zip(ids, found)
            if not isinstance(s, BaseException)}


async def _render_list(request: Request, user, which: Which, whose: Whose, cursor: str | None,
                       template: str, status_code: int = 200, completed: dict | None = None,
                       errors: dict | None = None, page: TaskPage | None = None,
                       notice: str | None = None, typed: dict | None = None):
    page = page or await _tasks(request, user, which, whose, cursor)
    completed = completed or {}
    items = [task.model_copy(update={"state": completed[task.task_id]["outcome"]})
             if task.task_id in completed else task for task in page.items]
    # after one is completed, the keyboard goes on to the next open task (else the first)
    focus = None
    if completed:
        done_at = next((n for n, t in enumerate(items) if t.task_id in completed), -1)
        following = [t for t in items[done_at + 1:] + items[:done_at + 1] if t.state == "open"]
        focus = following[0].task_id if following else None
    shown = {t.task_id for t in items}
    unplaced = [e for task_id, e in (errors or {}).items() if task_id not in shown]
    return render(request, template, status_code=status_code, tasks=items, unplaced=unplaced,
                  next_cursor=page.next_cursor, cursor=cursor, which=which, whose=whose,
                  sequences=await _sequences(request, items), completed=completed,
                  errors=errors or {}, focus=focus, notice=notice, typed=typed or {},
                  query=urlencode({"which": which, "whose": whose}))


@router.get("/tasks")
async def task_list(request: Request, user: SignedIn, which: Which = "due",
                    whose: Whose | None = None, cursor: Cursor = None, rows: bool = False,
                    completed: Literal["done", "skipped"] | None = None):
    """The list; `rows=1` answers only the next rows (htmx's "Show more")."""
    return await _render_list(request, user, which, _whose(user, whose), cursor,
                              "tasks/_rows.html" if rows else "tasks/list.html",
                              notice=completed)


@router.post("/tasks/{task_id}/complete")
async def complete_task(request: Request, user: SignedIn, task_id: uuid.UUID,
                        which: Annotated[Which, Form()] = "due",
                        whose: Annotated[Whose | None, Form()] = None):
    """Done or skipped, with a note. With htmx the list comes back with this task marked in
    place and the focus on the next open one; without, the page is loaded again."""
    form = await request.form()
    whose = _whose(user, whose)
    htmx = request.headers.get("hx-request") == "true"
    # the list as it was shown, read before the task leaves it
    before = await _tasks(request, user, which, whose, None) if htmx else None
    note = str(form.get("note") or "").strip() or None
    errors: dict = {}
    status = 422
    try:
        outcome = c.TaskOutcome(outcome=form.get("outcome"), note=note)
    except ValidationError as error:
        errors = {task_id: validation_errors(error, texts_for(request).gettext)}
    else:
        try:
            await ask(request, c.CompleteTask, task_id=task_id, outcome=outcome.outcome,
                      note=outcome.note)
        except ProblemError as refused:
            if refused.problem.status != 409:
                raise
            # completed already (in another tab, by a colleague): said where it was
            errors, status = {task_id: {"": "completed_already"}}, 409
    if errors:
        return await _render_list(request, user, which, whose, None,
                                  "tasks/_list.html" if htmx else "tasks/list.html",
                                  status_code=status, errors=errors, page=before,
                                  typed={task_id: note or ""})
    if htmx:
        return await _render_list(request, user, which, whose, None, "tasks/_list.html",
                                  completed={task_id: {"outcome": outcome.outcome,
                                                       "note": outcome.note}}, page=before)
    return RedirectResponse(
        f"/tasks?{urlencode({'which': which, 'whose': whose, 'completed': outcome.outcome})}",
        status_code=303)
