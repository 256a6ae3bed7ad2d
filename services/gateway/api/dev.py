"""The dev clock: only on a stack whose clock is adjustable (`include_api` decides)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from contracts import commands as c
from sequences import clock
from services.gateway.api.deps import KEY_REQUIRED

router = APIRouter(prefix="/v1/dev", tags=["dev"], dependencies=KEY_REQUIRED)


@router.post("/clock/advance")
async def advance_clock(body: c.ClockAdvance, request: Request):
    """Dev stack only: move every service's clock forward (e.g. `{"by": "2d"}`)."""
    offset = await clock.advance(request.app.state.nc.jetstream(), clock.parse_duration(body.by))
    return {"offset_seconds": offset.total_seconds()}
