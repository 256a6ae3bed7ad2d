"""Who is using the app: the session cookie, the CSRF check, and what a page route may raise.

Every unsafe request (POST, ...) of a signed-in user carries the session's CSRF token, as the
form field `csrf_token` (forms without JavaScript) or the `X-CSRF-Token` header (htmx sends
it from the page's `<meta>`). Forms shown before signing in (sign-in, an invite) use a
double-submit cookie instead, since there is no session yet to hold a token."""

from __future__ import annotations

import secrets
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from sequences import logs
from services.gateway import sign_in
from services.gateway.sign_in import SignedInUser
from services.gateway.timing import part

SESSION_COOKIE = "seq_session"
FORM_COOKIE = "seq_form"  # the double-submit token of the forms shown before signing in
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class SignInRequired(Exception):
    pass


class CsrfRefused(Exception):
    pass


def is_secure(request: Request) -> bool:
    return request.app.state.public_url.startswith("https://")


async def _form_token(request: Request) -> str | None:
    if token := request.headers.get("x-csrf-token"):
        return token
    if request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        return (await request.form()).get("csrf_token")
    return None


async def signed_in(request: Request) -> SignedInUser:
    with part("session"):
        user = await sign_in.user_of_session(request.app.state.engine,
                                             request.cookies.get(SESSION_COOKIE))
    if user is None:
        raise SignInRequired()
    if request.method not in SAFE_METHODS:
        token = await _form_token(request)
        if not token or not secrets.compare_digest(token, user.csrf_token):
            raise CsrfRefused()
    request.state.user = user
    logs.set_workspace(user.workspace_id)  # the request's log lines name it
    return user


SignedIn = Annotated[SignedInUser, Depends(signed_in)]


async def admin(user: SignedIn) -> SignedInUser:
    if not user.is_admin:
        raise CsrfRefused()  # the same refusal: this action is not the user's to take
    return user


Admin = Annotated[SignedInUser, Depends(admin)]


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=int(sign_in.LIFETIME.total_seconds()),
                        httponly=True, samesite="lax", secure=is_secure(request), path="/")


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="lax",
                           secure=is_secure(request), path="/")


def form_token(request: Request) -> str:
    """The double-submit token for a form shown before signing in (set by `with_form_cookie`)."""
    token = request.cookies.get(FORM_COOKIE)
    if not token or len(token) > 100:
        token = secrets.token_urlsafe(32)
    request.state.form_token = token
    return token


def with_form_cookie(response: Response, request: Request) -> Response:
    response.set_cookie(FORM_COOKIE, request.state.form_token, httponly=True, samesite="lax",
                        secure=is_secure(request), path="/")
    return response


def form_token_matches(request: Request, submitted: str | None) -> bool:
    cookie = request.cookies.get(FORM_COOKIE)
    return bool(cookie and submitted and secrets.compare_digest(cookie, submitted))


def to_sign_in(request: Request) -> Response:
    """Where a signed-out request goes: the sign-in page, then back here (htmx: a full
    redirect of the page, not a sign-in form swapped into a table)."""
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = f"/sign-in?next={quote(back, safe='')}" if request.method == "GET" else "/sign-in"
    if request.headers.get("hx-request") == "true":
        return HTMLResponse("", headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def safe_next(target: str | None) -> str:
    """Only a path of this site (no `//host`, no scheme) is followed after signing in."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"
