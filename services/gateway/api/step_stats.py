"""`GET /v1/sequences/{sequence_id}/steps/stats`: per step of a sequence, how many enrollees
got it, opened it, and replied or bounced after it (the web app's Steps tab shows the same);
`GET /v1/sequences/{sequence_id}/analytics?from=&to=`: the analytics projection's counts and
rates over a date range."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError

from contracts import commands as c
from contracts.views import SequenceAnalytics, SequenceStepStats
from services.gateway.bus import problem, stack_now
from services.gateway.api.deps import KEY_REQUIRED, Caller, ask

router = APIRouter(prefix="/v1/sequences", tags=["sequences"], dependencies=KEY_REQUIRED)


@router.get("/{sequence_id}/steps/stats", response_model=SequenceStepStats)
async def step_stats(sequence_id: uuid.UUID, request: Request):
    """Per step as the sequence is now, in order: `sent` (an email sent, or the task done),
    `opened` (emails opened at least once), `opens` (every open), `replied` and `bounced`
    (enrollees whose last step it was when they replied or bounced)."""
    return await ask(request, c.GetStepStats, sequence_id=sequence_id)


@router.get("/{sequence_id}/analytics", response_model=SequenceAnalytics)
async def sequence_analytics(
        sequence_id: uuid.UUID, request: Request,
        since: Annotated[date | None, Query(alias="from", description=(
            "first UTC day (included); default: 30 days before `to`"))] = None,
        until: Annotated[date | None, Query(alias="to", description=(
            "last UTC day (included); default: today"))] = None):
    """Counts per sequence, step and A/B variant over a date range: enrolled, sent,
    delivered (sent less bounced), unique opens and clicks of people and, apart, of machines
    (docs/machine-rules.md), replies (and by intent), hard and soft bounces, opt-outs; with
    `rates`, each with its `formula` (open rate = unique human opens / delivered, ...)."""
    until = until or (await stack_now(request)).date()  # the day the events are stamped with
    since = since or until - timedelta(days=30)
    try:
        query = c.GetSequenceAnalytics(workspace_id=uuid.UUID(int=0), sequence_id=sequence_id,
                                       since=since, until=until)
    except ValidationError:
        raise problem(422, "to", "`to` must not be before `from`, nor ten years after it") \
            from None
    return await ask(request, c.GetSequenceAnalytics, sequence_id=query.sequence_id,
                     since=query.since, until=query.until)


@router.post("/{sequence_id}/variants/winner", status_code=200)
async def choose_variant_winner(sequence_id: uuid.UUID, body: c.VariantWinnerChoice,
                                request: Request, caller: Caller):
    """Choose an A/B winner by hand (`VariantWinnerChosen`): from now on every step with
    variants sends the winner's subject and body; what was sent stays."""
    return await ask(request, c.ChooseVariantWinner, sequence_id=sequence_id,
                     letter=body.letter, chosen_by=caller.user_email)
