"""Settings: the user's profile (name, language, timezone, password), the workspace's users and
invites, API keys, webhooks with their delivery log (the mailboxes: routes/mailboxes.py).

Secrets (an invite link, an API key, a webhook's signing secret) are shown once, in the answer
to the form that makes them, never in a URL and never again. Inviting and changing webhooks
are an admin's; anyone may make a key for themselves and revoke their own (an admin anyone's).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal
from zoneinfo import available_timezones

from fastapi import Form, Query, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationError

import contracts.events  # noqa: F401 (registers every event type, for the webhook form)
from contracts import commands as c
from contracts.base import EVENT_TYPES
from contracts.values import SingleLine, TimezoneName
from contracts.views import (
    NewWebhook,
    WebhookDeliveryPage,
    WebhookPage,
    WebhookView,
)
from sequences.i18n import N_
from services.gateway import accounts, sign_in
from services.gateway.bus import ProblemError
from services.gateway.web.forms import errors_of, validation_errors
from services.gateway.web.pages import ask, error_page, page_router
from services.gateway.web.session import Admin, SignedIn, set_session_cookie
from services.gateway.web.templating import render, texts_for

router = page_router()
Text = Annotated[str, Form(max_length=5000)]
Cursor = Annotated[str | None, Query(max_length=500)]
ZONES = sorted(available_timezones())
EVENT_NAMES = sorted(EVENT_TYPES)

# where our words are better than the validator's English, by field
_FIELD_MESSAGES = {
    "email": N_("Enter an email address, like name@example.com."),
    "timezone": N_("Choose a timezone from the list (an IANA name such as Asia/Seoul)."),
    "url": N_("Enter an https:// address with a host: deliveries go to https only."),
    "event_types": N_("Choose at least one event type, or every event."),
}


def _errors(request: Request, error: ValidationError) -> dict[str, str]:
    """The contract model's refusal, field by field (`event_types[0]` under `event_types`), in
    the reader's language."""
    gettext = texts_for(request).gettext
    found: dict[str, str] = {}
    for name, message in validation_errors(error, gettext).items():
        field = name.split("[")[0].split(".")[0]
        own = _FIELD_MESSAGES.get(field)
        found.setdefault(field, str(gettext(own)) if own else message)
    return found


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


@router.get("/settings")
async def overview(request: Request, user: SignedIn):
    return render(request, "settings/index.html", section="")


# --- profile ------------------------------------------------------------------------------------


class ProfileForm(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: Annotated[SingleLine, Field(max_length=200)] = ""
    language: Literal["en", "ko", "auto"] = "auto"
    timezone: TimezoneName = "UTC"


def _profile(request: Request, status_code: int = 200, **context):
    context.setdefault("values", None)
    context.setdefault("errors", {})
    context.setdefault("password_errors", {})
    return render(request, "settings/profile.html", status_code=status_code, section="profile",
                  zones=ZONES, **context)


@router.get("/settings/profile")
async def profile(request: Request, user: SignedIn,
                  saved: Literal["profile", "password"] | None = None):
    return _profile(request, saved=saved)


@router.post("/settings/profile")
async def save_profile(request: Request, user: SignedIn, name: Text = "", language: Text = "auto",
                       timezone: Text = "UTC"):
    typed = {"name": name.strip(), "language": language, "timezone": timezone.strip()}
    try:
        form = ProfileForm(**typed)
    except ValidationError as error:
        return _profile(request, 422, values=typed, errors=_errors(request, error))
    await sign_in.set_preferences(request.app.state.engine, user.user_id, name=form.name,
                                  timezone=form.timezone,
                                  language=None if form.language == "auto" else form.language)
    return RedirectResponse("/settings/profile?saved=profile", status_code=303)


@router.post("/settings/profile/password")
async def change_password(request: Request, user: SignedIn, current: Text = "", new: Text = "",
                          repeat: Text = ""):
    """A new password ends every other session of the user (a stolen one too); this one goes
    on in a new session."""
    engine = request.app.state.engine
    errors: dict[str, str] = {}
    try:
        if not await sign_in.check_password(engine, user, current, _client(request)):
            errors["current"] = "wrong"
    except sign_in.RateLimited:
        errors[""] = "rate_limited"
    if not errors:
        if problem := sign_in.password_problem(new):
            errors["new"] = problem
        elif new != repeat:
            errors["repeat"] = "mismatch"
    if errors:
        return _profile(request, 429 if errors.get("") else 422, password_errors=errors)
    session = await sign_in.change_password(engine, user.user_id, new)
    response = RedirectResponse("/settings/profile?saved=password", status_code=303)
    set_session_cookie(response, request, session)
    return response


# --- users and invites --------------------------------------------------------------------------


class InviteForm(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    email: EmailStr
    name: Annotated[SingleLine, Field(max_length=200)] = ""
    role: Literal["member", "admin"] = "member"


async def _users(request: Request, user, status_code: int = 200, **context):
    async with request.app.state.engine.connect() as conn:
        users = await sign_in.workspace_users(conn, user.workspace_id)
        invites = await sign_in.pending_invites(conn, user.workspace_id) if user.is_admin else []
    context.setdefault("values", {})
    context.setdefault("errors", {})
    return render(request, "settings/users.html", status_code=status_code, section="users",
                  users=users, invites=invites, **context)


@router.get("/settings/users")
async def users(request: Request, user: SignedIn):
    return await _users(request, user)


@router.post("/settings/users/invite")
async def invite(request: Request, user: Admin, email: Text = "", name: Text = "",
                 role: Text = "member"):
    typed = {"email": email.strip(), "name": name.strip(), "role": role}
    try:
        form = InviteForm(**typed)
    except ValidationError as error:
        return await _users(request, user, 422, values=typed, errors=_errors(request, error))
    try:
        async with request.app.state.engine.begin() as conn:
            token = await sign_in.invite(conn, user, form.email, form.name, form.role)
    except accounts.EmailTaken:
        return await _users(request, user, 409, values=typed, errors={"email": str(
            texts_for(request).gettext(N_("This workspace has a user with this email.")))})
    link = f"{request.app.state.public_url.rstrip('/')}/invite/{token}"
    return await _users(request, user, 201, invited=form, invite_link=link)


# --- API keys -----------------------------------------------------------------------------------


async def _keys(request: Request, user, cursor: str | None = None, status_code: int = 200,
                **context):
    async with request.app.state.engine.connect() as conn:
        keys, next_cursor = await accounts.list_keys(conn, user.workspace_id, 100, cursor)
        people = {u.user_id: u for u in await sign_in.workspace_users(conn, user.workspace_id)}
    context.setdefault("values", {})
    context.setdefault("errors", {})
    return render(request, "settings/api_keys.html", status_code=status_code,
                  section="api-keys", keys=keys, next_cursor=next_cursor, cursor=cursor,
                  people=people, **context)


@router.get("/settings/api-keys")
async def api_keys(request: Request, user: SignedIn, cursor: Cursor = None):
    return await _keys(request, user, cursor)


@router.post("/settings/api-keys")
async def create_api_key(request: Request, user: SignedIn, name: Text = ""):
    """A key for the signed-in user: shown in this answer only."""
    typed = {"name": name.strip()}
    try:
        body = c.NewApiKeyRequest(**typed)
    except ValidationError as error:
        return await _keys(request, user, status_code=422, values=typed,
                           errors=_errors(request, error))
    async with request.app.state.engine.begin() as conn:
        created = await accounts.issue_key(conn, user.workspace_id, user.user_id, body.name)
    return await _keys(request, user, status_code=201, created=created)


async def _own_key(request: Request, user, key_id: uuid.UUID):
    """The key, if it is this user's to revoke (their own, or any of the workspace for an
    admin); None otherwise (the same not-found page)."""
    async with request.app.state.engine.connect() as conn:
        key = await accounts.key_in(conn, user.workspace_id, key_id)
    if key is None or not (user.is_admin or key.user_id == user.user_id):
        return None
    return key


@router.get("/settings/api-keys/{key_id}/revoke")
async def confirm_revoke(request: Request, user: SignedIn, key_id: uuid.UUID):
    key = await _own_key(request, user, key_id)
    if key is None:
        return error_page(request, 404)
    return render(request, "settings/confirm.html", section="api-keys", key=key)


@router.post("/settings/api-keys/{key_id}/revoke")
async def revoke(request: Request, user: SignedIn, key_id: uuid.UUID):
    if await _own_key(request, user, key_id) is None:
        return error_page(request, 404)
    async with request.app.state.engine.begin() as conn:
        await accounts.revoke_key(conn, user.workspace_id, key_id)
    return RedirectResponse("/settings/api-keys", status_code=303)


# --- webhooks -----------------------------------------------------------------------------------


async def _webhooks(request: Request, cursor: str | None = None, status_code: int = 200,
                    **context):
    page = WebhookPage.model_validate(
        await ask(request, c.ListWebhooks, page=c.Page(limit=100, cursor=cursor)))
    context.setdefault("values", {"event_types": []})
    context.setdefault("errors", {})
    return render(request, "settings/webhooks.html", status_code=status_code,
                  section="webhooks", page=page, cursor=cursor, event_names=EVENT_NAMES,
                  **context)


@router.get("/settings/webhooks")
async def webhooks(request: Request, user: SignedIn, cursor: Cursor = None):
    return await _webhooks(request, cursor)


@router.post("/settings/webhooks")
async def add_webhook(request: Request, user: Admin):
    """Deliver this workspace's events of these types (or `*`) to an https URL; the signing
    secret is shown in this answer only."""
    form = await request.form()
    typed = {"url": str(form.get("url") or "").strip(),
             "description": str(form.get("description") or "").strip(),
             "event_types": [str(v) for v in form.getlist("event_types")][:200]}
    try:
        body = c.WebhookRequest(**typed)
        created = NewWebhook.model_validate(await ask(request, c.RegisterWebhook,
                                                      **body.model_dump()))
    except ValidationError as error:
        return await _webhooks(request, status_code=422, values=typed,
                               errors=_errors(request, error))
    except ProblemError as refused:
        if refused.problem.status not in (409, 422):
            raise
        return await _webhooks(request, status_code=refused.problem.status, values=typed,
                               errors=errors_of(refused.problem))
    return await _webhooks(request, status_code=201, created=created)


async def _webhook(request: Request, webhook_id: uuid.UUID) -> WebhookView:
    return WebhookView.model_validate(await ask(request, c.GetWebhook, webhook_id=webhook_id))


DeliveryState = Literal["pending", "delivered", "failed"]


@router.get("/settings/webhooks/{webhook_id}")
async def deliveries(request: Request, user: SignedIn, webhook_id: uuid.UUID,
                     state: DeliveryState | None = None, cursor: Cursor = None,
                     rows: bool = False):
    """The delivery log of one webhook, newest first, filtered by state; `rows=1` answers only
    the next rows (htmx's "Show more")."""
    webhook = await _webhook(request, webhook_id)
    page = WebhookDeliveryPage.model_validate(await ask(
        request, c.ListWebhookDeliveries, webhook_id=webhook_id, state=state,
        page=c.Page(limit=50, cursor=cursor)))
    return render(request, "settings/_deliveries.html" if rows else "settings/deliveries.html",
                  section="webhooks", webhook=webhook, page=page, state=state, cursor=cursor)


@router.post("/settings/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver")
async def redeliver(request: Request, user: Admin, webhook_id: uuid.UUID,
                    delivery_id: uuid.UUID, state: Annotated[DeliveryState | None, Form()] = None):
    await ask(request, c.RedeliverWebhook, webhook_id=webhook_id, delivery_id=delivery_id)
    back = f"/settings/webhooks/{webhook_id}" + (f"?state={state}" if state else "")
    return RedirectResponse(back, status_code=303)


@router.get("/settings/webhooks/{webhook_id}/rotate")
async def confirm_rotate(request: Request, user: Admin, webhook_id: uuid.UUID):
    return render(request, "settings/confirm.html", section="webhooks", key=None,
                  rotate=await _webhook(request, webhook_id))


@router.post("/settings/webhooks/{webhook_id}/rotate")
async def rotate_secret(request: Request, user: Admin, webhook_id: uuid.UUID):
    """A new signing secret, shown in this answer only; the old one signs beside it for a day
    (the API's default grace period) so the receiving systems switch at their pace."""
    try:
        rotated = NewWebhook.model_validate(await ask(request, c.RotateWebhookSecret,
                                                      webhook_id=webhook_id))
    except ProblemError as refused:
        if refused.problem.status != 409:
            raise
        return await _webhooks(request, status_code=409,
                               rotation_running=await _webhook(request, webhook_id))
    return await _webhooks(request, status_code=201, rotated=rotated)


@router.get("/settings/webhooks/{webhook_id}/delete")
async def confirm_delete(request: Request, user: Admin, webhook_id: uuid.UUID):
    return render(request, "settings/confirm.html", section="webhooks", key=None,
                  webhook=await _webhook(request, webhook_id))


@router.post("/settings/webhooks/{webhook_id}/delete")
async def delete_webhook(request: Request, user: Admin, webhook_id: uuid.UUID):
    await ask(request, c.DeleteWebhook, webhook_id=webhook_id)
    return RedirectResponse("/settings/webhooks", status_code=303)
