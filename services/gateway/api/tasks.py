"""Tasks: the SMS and call steps that people do by hand."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from contracts import commands as c
from contracts.views import Created, TaskPage
from services.gateway.api.deps import KEY_REQUIRED, Cursor, Limit, ask

router = APIRouter(prefix="/v1/tasks", tags=["tasks"], dependencies=KEY_REQUIRED)


@router.get("", response_model=TaskPage)
async def list_tasks(
    request: Request,
    owner: Annotated[str | None, Query(max_length=200)] = None,
    sequence_id: uuid.UUID | None = None,
    which: Literal["due", "overdue", "open", "all"] = "open",
    limit: Limit = 50,
    cursor: Cursor = None,
):
    """SMS and call steps waiting for people, per owner and sequence."""
    return await ask(request, c.ListTasks, owner_name=owner, sequence_id=sequence_id, which=which,
                     page=c.Page(limit=limit, cursor=cursor))


@router.post("/{task_id}/complete", response_model=Created)
async def complete_task(task_id: uuid.UUID, body: c.TaskOutcome, request: Request):
    """Mark the task done or skipped: the enrollment moves on to its next step."""
    return await ask(request, c.CompleteTask, task_id=task_id, **body.model_dump())
