"""Campaigns › Auto follow-up: the sequence list, and pausing, resuming and archiving."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Form, Query, Request
from fastapi.responses import RedirectResponse

from contracts import commands as c
from contracts.views import SequencePage, SequenceView
from services.gateway.web.pages import ask, page_router
from services.gateway.web.session import SignedIn, safe_next
from services.gateway.web.templating import render

router = page_router()
PAGE_SIZE = 50


@router.get("/campaigns")
async def sequence_list(request: Request, user: SignedIn,
                        cursor: Annotated[str | None, Query(max_length=500)] = None,
                        rows: bool = False):
    """The list; `rows=1` answers only the next rows (htmx's "Show more")."""
    page = SequencePage.model_validate(
        await ask(request, c.ListSequences, page=c.Page(limit=PAGE_SIZE, cursor=cursor)))
    return render(request, "campaigns/_rows.html" if rows else "campaigns/list.html",
                  page=page, cursor=cursor)


_ACTIONS = {"pause": c.PauseSequence, "resume": c.ResumeSequence, "archive": c.ArchiveSequence}


@router.get("/sequences/{sequence_id}/archive")
async def confirm_archive(request: Request, user: SignedIn, sequence_id: uuid.UUID):
    """Archiving stops every enrollee for good: asked first, on a page of its own (no script
    needed; with htmx the same page opens in place)."""
    sequence = SequenceView.model_validate(
        await ask(request, c.GetSequence, sequence_id=sequence_id))
    return render(request, "campaigns/confirm_archive.html", sequence=sequence)


def _sequence_action(action: str, command: type) -> None:
    async def act(request: Request, user: SignedIn, sequence_id: uuid.UUID,
                  back: Annotated[str, Form(max_length=500)] = "/campaigns"):
        await ask(request, command, sequence_id=sequence_id)
        return RedirectResponse(safe_next(back), status_code=303)

    router.post(f"/sequences/{{sequence_id}}/{action}", name=f"{action}_sequence_page")(act)


for _action, _command in _ACTIONS.items():
    _sequence_action(_action, _command)
