"""Operations: the system's key figures for a workspace's admins (lag per consumer, the outbox,
due steps and how late they are, sends per minute, mailbox health, recent handler errors with
their trace id), read live by `sequences.operations` (what `sequences status` prints and the
metrics gauges read) and refreshed by the page itself every few seconds.

The figures are the whole system's, not one workspace's: on the embedded stack the operator is
the team's admin, and nothing shown is a customer's data beyond an event's type and stream id
and a handler's error line."""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import Request

from sequences import operations
from services.gateway.web.pages import now, page_router
from services.gateway.web.session import Admin
from services.gateway.web.templating import render

router = page_router()

REFRESH_SECONDS = 5
# past these a figure is shown as needing attention (the alert rules' thresholds:
# deploy/prometheus/alerts.yml)
STUCK_AFTER = 300.0  # a consumer's oldest unhandled event, seconds
LATE_AFTER = 120.0  # the oldest due step not fired, seconds


@router.get("/operations")
async def operations_page(request: Request, user: Admin, figures: int | None = None):
    found = await operations.figures(request.app.state.engine, request.app.state.nc.jetstream(),
                                     await now(request), wall=datetime.now(timezone.utc))
    template = "operations/_figures.html" if figures else "operations/page.html"
    return render(request, template, found=found, refresh=REFRESH_SECONDS,
                  stuck_after=STUCK_AFTER, late_after=LATE_AFTER)
