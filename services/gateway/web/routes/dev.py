"""Dev stack only (the adjustable clock): move time from the navigation, so a newcomer sees a
whole sequence run in a minute."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Form, Request
from fastapi.responses import RedirectResponse, Response

from sequences import clock
from services.gateway.web.pages import page_router
from services.gateway.web.session import SignedIn, safe_next

router = page_router()


@router.post("/dev/clock")
async def advance_clock(request: Request, user: SignedIn,
                        by: Annotated[Literal["1h", "1d"], Form()] = "1d",
                        back: Annotated[str, Form(max_length=500)] = "/"):
    await clock.advance(request.app.state.nc.jetstream(), clock.parse_duration(by))
    if request.headers.get("hx-request") == "true":
        # tables that poll pick the change up by themselves; tell the page it happened
        return Response(status_code=204, headers={"HX-Trigger": "clock-moved"})
    return RedirectResponse(safe_next(back), status_code=303)
