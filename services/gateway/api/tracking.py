"""The links in emails: the open-tracking pixel and the unsubscribe page. No API key: the
tokens in them are signed (`request.app.state.signer`) and say the workspace themselves."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from contracts import commands as c
from sequences.signing import BadToken
from services.gateway.api.deps import body_up_to, send
from services.gateway import recipient_pages
from services.gateway.bus import problem

router = APIRouter(include_in_schema=True, tags=["links in emails"])
Token = Annotated[str, Path(max_length=400)]
_PIXEL = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c000000000100"
                       "01000002024401003b")


@router.get("/t/{token}.gif", responses={200: {"content": {"image/gif": {}}}})
async def open_pixel(token: Token, request: Request):
    """The open-tracking pixel: records EmailOpened for the email it is in."""
    payload = _verified(request, "open", token)
    try:
        await send(request, c.RecordEmailOpen(workspace_id=payload["w"],
                                              enrollment_id=payload["e"], step_id=payload["s"]))
    except (KeyError, ValueError, ValidationError):
        raise problem(404, "token", "no such email") from None
    return Response(_PIXEL, media_type="image/gif",
                    headers={"Cache-Control": "no-store, private"})


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
async def unsubscribe_page(token: Token, request: Request):
    """The page behind the unsubscribe link: one button, so link scanners do not unsubscribe.
    In the sequence's language (services/gateway/recipient_pages.py)."""
    payload = _verified(request, "unsubscribe", token)
    return HTMLResponse(_page(payload, request, done=False))


@router.post("/unsubscribe/{token}", response_class=HTMLResponse)
async def unsubscribe(token: Token, request: Request):
    """The page's button, and RFC 8058 one-click (`List-Unsubscribe=One-Click` posted by mail
    clients): the contact is opted out and every active enrollment of theirs stops."""
    payload = _verified(request, "unsubscribe", token)
    body = parse_qs((await body_up_to(request, 4096)).decode(errors="replace"))
    source = "one-click" if body.get("List-Unsubscribe") == ["One-Click"] else "unsubscribe-link"
    try:
        await send(request, c.OptOutContact(workspace_id=payload["w"], contact_id=payload["c"],
                                            source=source))
    except (KeyError, ValueError, ValidationError):
        raise problem(404, "token", "no such contact") from None
    return HTMLResponse(_page(payload, request, done=True))


def _verified(request: Request, purpose: str, token: str) -> dict:
    try:
        return request.app.state.signer.verify(purpose, token)
    except BadToken:
        raise problem(404, "token", "no such link") from None


def _page(payload: dict, request: Request, done: bool) -> str:
    """In the sequence's language (the token names it; services/gateway/recipient_pages.py)."""
    language = recipient_pages.page_language(payload, request.headers.get("accept-language"))
    return recipient_pages.unsubscribe_page(language, done=done)
