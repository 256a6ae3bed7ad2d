"""`GET /v1/sequences/{sequence_id}/steps/stats`: per step of a sequence, how many enrollees
got it, opened it, and replied or bounced after it (the web app's Steps tab shows the same)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request

from contracts import commands as c
from contracts.views import SequenceStepStats
from services.gateway.api.deps import KEY_REQUIRED, ask

router = APIRouter(prefix="/v1/sequences", tags=["sequences"], dependencies=KEY_REQUIRED)


@router.get("/{sequence_id}/steps/stats", response_model=SequenceStepStats)
async def step_stats(sequence_id: uuid.UUID, request: Request):
    """Per step as the sequence is now, in order: `sent` (an email sent, or the task done),
    `opened` (emails opened at least once), `opens` (every open), `replied` and `bounced`
    (enrollees whose last step it was when they replied or bounced)."""
    return await ask(request, c.GetStepStats, sequence_id=sequence_id)
