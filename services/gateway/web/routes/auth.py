"""Signing in and out, accepting an invite, and the language switch."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import RedirectResponse

from services.gateway import sign_in
from services.gateway.web.pages import error_page, page_router
from services.gateway.web.session import (
    SESSION_COOKIE,
    SignedIn,
    clear_session_cookie,
    form_token,
    form_token_matches,
    safe_next,
    set_session_cookie,
    with_form_cookie,
)
from services.gateway.web.templating import render

router = page_router()
Text = Annotated[str, Form(max_length=500)]


@router.get("/")
async def home(request: Request):
    return RedirectResponse("/campaigns", status_code=303)


@router.get("/sign-in")
async def sign_in_page(request: Request, next: str | None = None):
    form_token(request)
    return with_form_cookie(render(request, "sign_in.html", next=safe_next(next), errors={},
                                   email=""), request)


@router.post("/sign-in")
async def sign_in_submit(request: Request, email: Text = "", password: Text = "",
                         csrf_token: Text = "", next: Text = "/"):
    form_token(request)
    if not form_token_matches(request, csrf_token):
        return error_page(request, 403)
    errors = {}
    if not email.strip():
        errors["email"] = "missing_email"
    if not password:
        errors["password"] = "missing_password"
    session = None
    if not errors:
        try:
            session = await sign_in.sign_in(request.app.state.engine, email.strip(), password,
                                            request.client.host if request.client else "")
        except sign_in.RateLimited:
            errors[""] = "rate_limited"
        else:
            if session is None:
                errors[""] = "no_match"
    if session is None:
        return with_form_cookie(render(request, "sign_in.html", status_code=422 if errors.get(
            "") != "rate_limited" else 429, next=safe_next(next), errors=errors,
            email=email), request)
    response = RedirectResponse(safe_next(next), status_code=303)
    set_session_cookie(response, request, session)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, user: SignedIn):
    await sign_in.sign_out(request.app.state.engine, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/sign-in", status_code=303)
    clear_session_cookie(response, request)
    return response


@router.get("/invite/{token}")
async def invite_page(request: Request, token: str):
    async with request.app.state.engine.connect() as conn:
        invite = await sign_in.open_invite(conn, token)
    if invite is None:
        return render(request, "invite_gone.html", status_code=404)
    form_token(request)
    return with_form_cookie(render(request, "invite.html", invite=invite, errors={}), request)


@router.post("/invite/{token}")
async def accept_invite(request: Request, token: str, password: Text = "", repeat: Text = "",
                        csrf_token: Text = ""):
    form_token(request)
    if not form_token_matches(request, csrf_token):
        return error_page(request, 403)
    async with request.app.state.engine.connect() as conn:
        invite = await sign_in.open_invite(conn, token)
    if invite is None:
        return render(request, "invite_gone.html", status_code=404)
    errors = {}
    if problem := sign_in.password_problem(password):
        errors["password"] = problem
    elif password != repeat:
        errors["repeat"] = "mismatch"
    session = None if errors else await sign_in.accept_invite(request.app.state.engine, token,
                                                              password)
    if session is None:
        if not errors:
            return render(request, "invite_gone.html", status_code=404)
        return with_form_cookie(render(request, "invite.html", status_code=422, invite=invite,
                                       errors=errors), request)
    response = RedirectResponse("/campaigns", status_code=303)
    set_session_cookie(response, request, session)
    return response


@router.post("/preferences")
async def preferences(request: Request, user: SignedIn, language: Text = "", back: Text = "/"):
    """The language switch in the navigation (the profile page sets the rest)."""
    if language in ("en", "ko", "auto"):
        await sign_in.set_preferences(request.app.state.engine, user.user_id,
                                      language=None if language == "auto" else language)
    return RedirectResponse(safe_next(back), status_code=303)
