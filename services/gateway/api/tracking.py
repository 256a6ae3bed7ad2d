"""The links in emails: the open-tracking pixel and the unsubscribe page. No API key: the
tokens in them are signed (`request.app.state.signer`) and say the workspace themselves."""

from __future__ import annotations

import uuid
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from contracts import commands as c
from contracts.values import TrackedRequest
from sequences import i18n, metrics
from sequences.signing import BadToken
from sequences.link_tracking import is_trackable
from services.gateway.api.deps import body_up_to, send
from services.gateway import recipient_pages
from services.gateway.bus import problem

router = APIRouter(include_in_schema=True, tags=["links in emails"])
Token = Annotated[str, Path(max_length=400)]
_PIXEL = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c000000000100"
                       "01000002024401003b")


@router.api_route("/t/{token}.gif", methods=["GET", "HEAD"],
                  responses={200: {"content": {"image/gif": {}}}})
async def open_pixel(token: Token, request: Request):
    """The open-tracking pixel: records EmailOpened for the email it is in, a person's or a
    machine's (sequences/machine_rules.py decides from the request)."""
    payload = _verified(request, "open", token)
    try:
        await send(request, c.RecordEmailOpen(workspace_id=payload["w"],
                                              enrollment_id=payload["e"], step_id=payload["s"],
                                              request=_seen(request)))
    except (KeyError, ValueError, ValidationError):
        raise problem(404, "token", "no such email") from None
    return Response(_PIXEL, media_type="image/gif",
                    headers={"Cache-Control": "no-store, private"})


ClickToken = Annotated[str, Path(max_length=4096)]
_NO_CACHE = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer"}


@router.api_route("/c/{token}", methods=["GET", "HEAD"], response_class=RedirectResponse,
                  status_code=302, responses={404: {"content": {"text/html": {}}}})
async def click(token: ClickToken, request: Request):
    """A tracked link: 302 to the URL the email's body had (signed into the token with the
    email's ids, so it goes nowhere else), then records EmailClicked. The token is checked here
    and the answer goes at once: the click waits in the gateway and goes to the mailer with
    the others of the same moments (services/gateway/click_batch.py). A forged or altered token
    gets a plain page that leads nowhere, and nothing is recorded."""
    try:
        # a mail client may take the sentence's full stop after a link into it: a token's
        # signature never ends in punctuation, so it is not part of the token
        payload = request.app.state.signer.verify("click", token.rstrip(".,;:!?)"))
        url = payload["u"]
        if not isinstance(url, str) or not is_trackable(url):
            raise ValueError("not a link the mailer rewrites")
        click = c.SeenClick(click_id=uuid.uuid4(), enrollment_id=payload["e"],
                            step_id=payload["s"], link_index=payload["i"], url=url,
                            request=_seen(request), seconds_ago=0)
        workspace_id = uuid.UUID(str(payload["w"]))
    except (BadToken, KeyError, TypeError, ValueError, ValidationError):
        language = i18n.from_accept_language(request.headers.get("accept-language"))
        metrics.tracked_clicks.add(1, {"outcome": "gone"})
        return HTMLResponse(recipient_pages.link_gone_page(language), status_code=404,
                            headers=_NO_CACHE)
    queued = request.app.state.clicks.add(workspace_id, click)
    metrics.tracked_clicks.add(1, {"outcome": "redirected" if queued else "dropped"})
    return RedirectResponse(url, status_code=302, headers=_NO_CACHE)


def _seen(request: Request) -> TrackedRequest:
    """The facts the machine rules decide by (the method, user agent and client address)."""
    return TrackedRequest(method="HEAD" if request.method == "HEAD" else "GET",
                          user_agent=request.headers.get("user-agent", "")[:1000],
                          client_ip=(request.client.host if request.client else "")[:64])


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
