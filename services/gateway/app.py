"""The gateway: the HTTP API (FastAPI). It holds no business state: it knows who calls (API keys
of workspaces, `accounts.py`), validates input with the contract models, sends commands and
queries to the services over NATS in the caller's workspace, and answers with theirs."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import parse_qs

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ValidationError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from contracts import commands as c
from contracts.asyncapi import asyncapi_document
from contracts.base import FieldError, Problem
from contracts.views import (
    BulkEnrollmentResult,
    ContactPage,
    ContactView,
    Created,
    EnrollmentPage,
    EnrollmentStatus,
    EnrollmentView,
    ImportReport,
    MailboxHealthView,
    SchedulePreview,
    SequencePage,
    SequenceView,
    StepPreview,
    TaskPage,
    Timeline,
    ApiKeyPage,
    ApiKeyView,
    NewApiKey,
    UserPage,
    UserView,
    WorkspaceView,
    NewWebhook,
    WebhookDeliveryPage,
    WebhookDeliveryView,
    WebhookPage,
    WebhookView,
)
from sequences import clock
from sequences.bootstrap import configure_logging
from sequences.config import Settings
from sequences.db import create_engine, migrate
from sequences.messaging import rpc
from sequences.messaging.nats import connect
from sequences.signing import BadToken, signer_from_env
from sequences.tracing import setup_tracing, tracer

_tracer = tracer(__name__)
from services.enrollment import contact_import
from services.gateway import accounts, bus, recipient_pages
from services.gateway.bus import ProblemError
from services.gateway.accounts import Principal
from services.gateway.idempotency import idempotent
from services.gateway.web import include_web

MIGRATIONS = accounts.MIGRATIONS

PROBLEM_JSON = "application/problem+json"
_PROBLEM_RESPONSES = {
    status: {"model": Problem, "content": {PROBLEM_JSON: {}}}
    for status in (400, 401, 404, 409, 413, 415, 422, 503)
}
MAX_BODY_BYTES = 1024 * 1024
Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=500)]


def _problem_response(problem: Problem) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if problem.status == 401 else None
    return JSONResponse(problem.model_dump(), status_code=problem.status, media_type=PROBLEM_JSON,
                        headers=headers)


_problem = bus.problem


# --- who is calling ---------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey",
                     description="An API key of your workspace: `Authorization: Bearer sqk_...`")


async def caller(request: Request,
                 _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    """Every /v1 endpoint needs a key (the middleware `authenticate_callers` checked it)."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        raise _problem(401, "authorization", "send an API key: Authorization: Bearer <key>")
    return principal


Caller = Annotated[Principal, Depends(caller)]


def workspace_of(request: Request) -> uuid.UUID:
    return request.state.principal.workspace_id


async def ask(request: Request, kind: type[BaseModel], /, **fields):
    """Send a command or query, in the caller's workspace, to its service."""
    return await bus.ask(request.app.state.nc, workspace_of(request), kind, **fields)


async def send(request: Request, message: BaseModel):
    return await bus.send(request.app.state.nc, message)


_KEY_REQUIRED = [Depends(caller)]
sequences = APIRouter(prefix="/v1/sequences", tags=["sequences"], dependencies=_KEY_REQUIRED)
contacts = APIRouter(prefix="/v1/contacts", tags=["contacts"], dependencies=_KEY_REQUIRED)
enrollments = APIRouter(tags=["enrollments"], dependencies=_KEY_REQUIRED)


# --- the workspace: who am I, its users and API keys ------------------------------------------

workspace = APIRouter(prefix="/v1", tags=["workspace"], dependencies=_KEY_REQUIRED)


@workspace.get("/me", response_model=WorkspaceView)
async def who_am_i(request: Request, me: Caller):
    """The workspace of this API key, and the user it belongs to."""
    async with request.app.state.engine.connect() as conn:
        return await accounts.describe(conn, me)


@workspace.get("/users", response_model=UserPage)
async def list_users(request: Request, me: Caller, limit: Limit = 50, cursor: Cursor = None):
    async with request.app.state.engine.connect() as conn:
        items, next_cursor = await _answered(accounts.list_users(conn, me.workspace_id, limit,
                                                                 cursor))
    return UserPage(items=items, next_cursor=next_cursor)


@workspace.post("/users", status_code=201, response_model=UserView)
async def add_user(body: c.NewUserRequest, request: Request, me: Caller):
    """Add a user to this workspace (then make them a key with `POST /v1/api-keys`)."""
    try:
        async with request.app.state.engine.begin() as conn:
            return await accounts.add_user(conn, me.workspace_id, body.email, body.name)
    except accounts.EmailTaken:
        raise _problem(409, "email", "this workspace has a user with this email") from None


@workspace.get("/api-keys", response_model=ApiKeyPage)
async def list_api_keys(request: Request, me: Caller, limit: Limit = 50, cursor: Cursor = None):
    """This workspace's keys, by prefix (the keys themselves are never shown again)."""
    async with request.app.state.engine.connect() as conn:
        items, next_cursor = await _answered(accounts.list_keys(conn, me.workspace_id, limit,
                                                                cursor))
    return ApiKeyPage(items=items, next_cursor=next_cursor)


@workspace.post("/api-keys", status_code=201, response_model=NewApiKey)
async def create_api_key(body: c.NewApiKeyRequest, request: Request, me: Caller):
    """A new key for you (or another user of this workspace). The key is in this answer only:
    keep it; a repeat of this request (same `Idempotency-Key`) answers without it."""
    user_id = body.user_id or me.user_id
    async with request.app.state.engine.begin() as conn:
        if not await accounts.user_in(conn, me.workspace_id, user_id):
            raise _problem(404, "user_id", f"no such user: {user_id}")
        created = await accounts.issue_key(conn, me.workspace_id, user_id, body.name)
    request.state.one_time_fields = ("key",)  # not kept for idempotent repeats
    return created


@workspace.delete("/api-keys/{key_id}", response_model=ApiKeyView)
async def revoke_api_key(key_id: uuid.UUID, request: Request, me: Caller):
    """Revoke a key: it stops working at once."""
    async with request.app.state.engine.begin() as conn:
        revoked = await accounts.revoke_key(conn, me.workspace_id, key_id)
    if revoked is None:
        raise _problem(404, "key_id", f"no such API key: {key_id}")
    return revoked


_answered = bus.answered


# --- sequences ---------------------------------------------------------------------------------


@sequences.post("", status_code=201, response_model=Created)
async def create_sequence(body: c.SequenceDefinition, request: Request):
    """Save a sequence; it is live at once."""
    return await ask(request, c.CreateSequence, **body.model_dump())


@sequences.get("", response_model=SequencePage)
async def list_sequences(request: Request, limit: Limit = 50, cursor: Cursor = None):
    """Every sequence with its headline ("N enrolled · live")."""
    return await ask(request, c.ListSequences, page=c.Page(limit=limit, cursor=cursor))


@sequences.get("/{sequence_id}", response_model=SequenceView)
async def get_sequence(sequence_id: uuid.UUID, request: Request):
    """The sequence, its counts per status and its headline."""
    return await ask(request, c.GetSequence, sequence_id=sequence_id)


@sequences.put("/{sequence_id}/steps", response_model=SequenceView)
async def change_steps(sequence_id: uuid.UUID, body: c.StepsRequest, request: Request):
    """Replace the steps. Keep a step by sending its `step_id`; what enrollees already ran is
    never rewritten, and their pending steps are re-planned."""
    await ask(request, c.ChangeSequenceSteps, sequence_id=sequence_id, steps=body.steps)
    return await ask(request, c.GetSequence, sequence_id=sequence_id)


def _sequence_action(action: str, command: type[BaseModel], summary: str) -> None:
    async def act(sequence_id: uuid.UUID, request: Request):
        await ask(request, command, sequence_id=sequence_id)
        return await ask(request, c.GetSequence, sequence_id=sequence_id)

    act.__doc__ = summary
    sequences.post(f"/{{sequence_id}}/{action}", response_model=SequenceView,
                   name=f"{action}_sequence")(act)


_sequence_action("pause", c.PauseSequence,
                 "Pause: every enrollee's pending step is held until resumed.")
_sequence_action("resume", c.ResumeSequence,
                 "Resume: held steps go on; missed ones are re-planned from now by the same rules.")
_sequence_action("archive", c.ArchiveSequence,
                 "Archive: no new enrollments, nothing more goes out.")


@sequences.get("/{sequence_id}/schedule", response_model=SchedulePreview)
async def preview_schedule(sequence_id: uuid.UUID, request: Request, start: datetime | None = None):
    """When each step would go out for someone enrolled at `start` (default now), in the
    sequence's local time and in UTC."""
    return await ask(request, c.PreviewSchedule, sequence_id=sequence_id, start=start)


# --- enrollments -------------------------------------------------------------------------------


@enrollments.post("/v1/sequences/{sequence_id}/enrollments", status_code=201,
                  response_model=Created)
async def enroll(sequence_id: uuid.UUID, body: c.EnrollmentRequest, request: Request):
    """Enroll one contact: the first step is planned at once. A contact already active in the
    sequence is refused (409); one whose enrollment ended needs `reenroll: true`."""
    return await ask(request, c.EnrollContact, sequence_id=sequence_id, **body.model_dump())


@enrollments.post("/v1/sequences/{sequence_id}/enrollments/bulk",
                  response_model=BulkEnrollmentResult)
async def enroll_segment(sequence_id: uuid.UUID, body: c.BulkEnrollmentRequest, request: Request):
    """Enroll everyone with a status, tag or list (or all contacts) at once. Answers how many
    were enrolled, skipped as already active, and excluded as opted out."""
    return await ask(request, c.EnrollSegment, sequence_id=sequence_id, **body.model_dump())


@enrollments.get("/v1/sequences/{sequence_id}/enrollments", response_model=EnrollmentPage)
async def list_enrollments(
    sequence_id: uuid.UUID,
    request: Request,
    status: EnrollmentStatus | None = None,
    sort: c.EnrolleeSort = "enrolled_at",
    descending: bool = False,
    limit: Limit = 50,
    cursor: Cursor = None,
):
    """The enrollee table: status, current step, sends, opens, last activity, next due."""
    return await ask(request, c.ListEnrollments, 
        sequence_id=sequence_id, status=status, sort=sort, descending=descending,
        page=c.Page(limit=limit, cursor=cursor))


@enrollments.get("/v1/enrollments/{enrollment_id}", response_model=EnrollmentView)
async def get_enrollment(enrollment_id: uuid.UUID, request: Request):
    return await ask(request, c.GetEnrollment, enrollment_id=enrollment_id)


@enrollments.get("/v1/enrollments/{enrollment_id}/timeline", response_model=Timeline)
async def get_timeline(enrollment_id: uuid.UUID, request: Request):
    """Every event of the enrollment, in order, with what caused it: why an email did or did
    not go out."""
    return await ask(request, c.GetTimeline, enrollment_id=enrollment_id)


@enrollments.post("/v1/enrollments/{enrollment_id}/stop", response_model=EnrollmentView)
async def stop_enrollment(enrollment_id: uuid.UUID, request: Request,
                          body: c.StopRequest | None = None):
    """Stop by hand (optionally saying why): no further step runs."""
    reason = body.reason if body else None
    await ask(request, c.StopEnrollment, enrollment_id=enrollment_id, reason=reason)
    return await ask(request, c.GetEnrollment, enrollment_id=enrollment_id)


# --- contacts ----------------------------------------------------------------------------------


@contacts.post("", status_code=201, response_model=Created)
async def create_contact(body: c.ContactFields, request: Request):
    return await ask(request, c.CreateContact, **body.model_dump())


@contacts.get("", response_model=ContactPage)
async def list_contacts(
    request: Request,
    q: Annotated[str | None, Query(max_length=200, description="in name, company or email")] = None,
    status: Annotated[str | None, Query(max_length=50)] = None,
    tag: Annotated[str | None, Query(max_length=100)] = None,
    list_: Annotated[str | None, Query(alias="list", max_length=100)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
):
    return await ask(request, c.ListContacts, q=q, status=status, tag=tag, list=list_,
                                             page=c.Page(limit=limit, cursor=cursor))


@contacts.post("/import", response_model=ImportReport, openapi_extra={
    "requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}})
async def import_contacts(request: Request,
                          map_: Annotated[list[str], Query(alias="map", max_length=20)] = []):
    """Upsert contacts by email from a CSV file (UTF-8, UTF-8 with BOM, or CP949), sent as the
    request body with `Content-Type: text/csv`. Columns named like the fields (or 고객명, 회사명,
    직함, 담당자명, 이메일, ...) are understood; map others with `map=Column:field`. Rows that
    fail are listed with their line and reason; the others are imported."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "text/csv":
        raise _problem(415, "content-type", "send the file as text/csv")
    data = await _body_up_to(request, contact_import.MAX_IMPORT_BYTES)
    mapping = {}
    for item in map_:
        column, _, target = item.rpartition(":")
        if not column:
            raise _problem(422, "query.map", f"{item!r}: write it as Column:field")
        mapping[column] = target
    try:
        parsed = contact_import.parse(contact_import.decode(data), mapping)
    except contact_import.ImportFileError as error:
        raise _problem(422, error.field, str(error)) from None
    try:
        return await contact_import.import_contacts(request.app.state.nc, workspace_of(request),
                                                    parsed)
    except rpc.Rejected as rejected:
        raise ProblemError(rejected.problem) from None


async def _body_up_to(request: Request, limit: int) -> bytes:
    if int(request.headers.get("content-length") or 0) > limit:
        raise _problem(413, "body", f"the file is over {limit // 2**20} MB")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _problem(413, "body", f"the file is over {limit // 2**20} MB")
    return bytes(body)


@contacts.get("/{contact_id}", response_model=ContactView)
async def get_contact(contact_id: uuid.UUID, request: Request):
    return await ask(request, c.GetContact, contact_id=contact_id)


@contacts.patch("/{contact_id}", response_model=ContactView)
async def update_contact(contact_id: uuid.UUID, body: c.ContactChanges, request: Request):
    """Change some fields; the others stay."""
    await ask(request, c.UpdateContact, contact_id=contact_id, changes=body)
    return await ask(request, c.GetContact, contact_id=contact_id)


@contacts.delete("/{contact_id}", status_code=204)
async def delete_contact(contact_id: uuid.UUID, request: Request):
    """Delete (softly: the history stays in the log); active enrollments stop."""
    await ask(request, c.DeleteContact, contact_id=contact_id)
    return Response(status_code=204)


@contacts.post("/{contact_id}/opt-out", response_model=ContactView)
async def opt_out(contact_id: uuid.UUID, request: Request, body: c.StopRequest | None = None):
    """Opt the contact out by hand: every active enrollment stops, and no email reaches them
    again."""
    reason = body.reason if body else None
    await ask(request, c.OptOutContact, contact_id=contact_id, source="manual", reason=reason)
    return await ask(request, c.GetContact, contact_id=contact_id)


@sequences.post("/{sequence_id}/steps/{step_id}/preview", response_model=StepPreview)
async def preview_step(sequence_id: uuid.UUID, step_id: uuid.UUID, request: Request,
                       body: c.PreviewRequest | None = None):
    """Render a step for a chosen contact (or a sample one) without sending. Variables that
    would be empty are listed in `missing`: for those contacts the step would be held."""
    contact_id = body.contact_id if body else None
    return await ask(request, c.PreviewStep, sequence_id=sequence_id, step_id=step_id,
                                            contact_id=contact_id)


@sequences.post("/{sequence_id}/steps/{step_id}/test", status_code=202, response_model=Created)
async def send_test(sequence_id: uuid.UUID, step_id: uuid.UUID, request: Request,
                    me: Caller, body: c.TestEmailRequest | None = None):
    """Send test to me: the email step, rendered, to your own address (the API key's user);
    no enrollment changes."""
    contact_id = body.contact_id if body else None
    return await ask(request, c.SendTestEmail, sequence_id=sequence_id, step_id=step_id,
                     to=me.user_email, contact_id=contact_id)


@enrollments.post("/v1/enrollments/{enrollment_id}/retry", response_model=EnrollmentView)
async def retry_enrollment(enrollment_id: uuid.UUID, request: Request):
    """Try the held step again (after fixing the contact's data or the mailbox)."""
    await ask(request, c.RetryEnrollment, enrollment_id=enrollment_id)
    return await ask(request, c.GetEnrollment, enrollment_id=enrollment_id)


tasks = APIRouter(prefix="/v1/tasks", tags=["tasks"], dependencies=_KEY_REQUIRED)


@tasks.get("", response_model=TaskPage)
async def list_tasks(
    request: Request,
    owner: Annotated[str | None, Query(max_length=200)] = None,
    sequence_id: uuid.UUID | None = None,
    which: Literal["due", "overdue", "open", "all"] = "open",
    limit: Limit = 50,
    cursor: Cursor = None,
):
    """SMS and call steps waiting for people, per owner and sequence."""
    return await ask(request, c.ListTasks, owner_name=owner, sequence_id=sequence_id, which=which,
                                          page=c.Page(limit=limit, cursor=cursor))


@tasks.post("/{task_id}/complete", response_model=Created)
async def complete_task(task_id: uuid.UUID, body: c.TaskOutcome, request: Request):
    """Mark the task done or skipped: the enrollment moves on to its next step."""
    return await ask(request, c.CompleteTask, task_id=task_id, **body.model_dump())


mailboxes = APIRouter(prefix="/v1/mailboxes", tags=["mailboxes"], dependencies=_KEY_REQUIRED)


@mailboxes.get("/health", response_model=list[MailboxHealthView])
async def mailbox_health(request: Request):
    """The sender mailboxes the thread-watcher reads for replies and bounces: whether each can
    be read, by IDLE or by polling, its last error and when a failing one is tried again.
    Only the mailboxes this workspace's sequences send from."""
    senders = await ask(request, c.ListSenderAddresses)
    return await ask(request, c.GetMailboxHealth, addresses=senders)


# --- webhooks ----------------------------------------------------------------------------------

webhooks = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], dependencies=_KEY_REQUIRED)


@webhooks.post("", status_code=201, response_model=NewWebhook)
async def register_webhook(body: c.WebhookRequest, request: Request):
    """Deliver this workspace's events of these types (or `*`) to an HTTPS URL: signed with
    the `secret` in this answer (shown once), retried with backoff, in order per enrollment."""
    created = await ask(request, c.RegisterWebhook, **body.model_dump())
    request.state.one_time_fields = ("secret",)  # not kept for idempotent repeats
    return created


@webhooks.get("", response_model=WebhookPage)
async def list_webhooks(request: Request, limit: Limit = 50, cursor: Cursor = None):
    return await ask(request, c.ListWebhooks, page=c.Page(limit=limit, cursor=cursor))


@webhooks.get("/{webhook_id}", response_model=WebhookView)
async def get_webhook(webhook_id: uuid.UUID, request: Request):
    return await ask(request, c.GetWebhook, webhook_id=webhook_id)


@webhooks.delete("/{webhook_id}", status_code=204)
async def delete_webhook(webhook_id: uuid.UUID, request: Request):
    """No more deliveries (pending ones are given up); the delivery log stays readable."""
    await ask(request, c.DeleteWebhook, webhook_id=webhook_id)
    return Response(status_code=204)


@webhooks.get("/{webhook_id}/deliveries", response_model=WebhookDeliveryPage)
async def list_webhook_deliveries(webhook_id: uuid.UUID, request: Request,
                                  state: Literal["pending", "delivered", "failed"] | None = None,
                                  limit: Limit = 50, cursor: Cursor = None):
    """The delivery log, newest first: attempts, the receiver's last answer, what is next."""
    return await ask(request, c.ListWebhookDeliveries, webhook_id=webhook_id, state=state,
                     page=c.Page(limit=limit, cursor=cursor))


@webhooks.post("/{webhook_id}/deliveries/{delivery_id}/redeliver",
               response_model=WebhookDeliveryView)
async def redeliver(webhook_id: uuid.UUID, delivery_id: uuid.UUID, request: Request):
    """Deliver that event again, now (its attempts start over)."""
    return await ask(request, c.RedeliverWebhook, webhook_id=webhook_id,
                     delivery_id=delivery_id)


# --- links in emails (no API key: they are signed) ---------------------------------------------

tracking = APIRouter(include_in_schema=True, tags=["links in emails"])
_PIXEL = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c000000000100"
                       "01000002024401003b")


@tracking.get("/t/{token}.gif", responses={200: {"content": {"image/gif": {}}}})
async def open_pixel(token: Annotated[str, Path(max_length=400)], request: Request):
    """The open-tracking pixel: records EmailOpened for the email it is in."""
    payload = _verified(request, "open", token)
    try:
        await send(request, c.RecordEmailOpen(workspace_id=payload["w"],
                                              enrollment_id=payload["e"], step_id=payload["s"]))
    except (KeyError, ValueError, ValidationError):
        raise _problem(404, "token", "no such email") from None
    return Response(_PIXEL, media_type="image/gif",
                    headers={"Cache-Control": "no-store, private"})


@tracking.get("/unsubscribe/{token}", response_class=HTMLResponse)
async def unsubscribe_page(token: Annotated[str, Path(max_length=400)], request: Request):
    """The page behind the unsubscribe link: one button, so link scanners do not unsubscribe.
    In the sequence's language (services/gateway/recipient_pages.py)."""
    payload = _verified(request, "unsubscribe", token)
    return HTMLResponse(_page(payload, request, done=False))


@tracking.post("/unsubscribe/{token}", response_class=HTMLResponse)
async def unsubscribe(token: Annotated[str, Path(max_length=400)], request: Request):
    """The page's button, and RFC 8058 one-click (`List-Unsubscribe=One-Click` posted by mail
    clients): the contact is opted out and every active enrollment of theirs stops."""
    payload = _verified(request, "unsubscribe", token)
    body = parse_qs((await _body_up_to(request, 4096)).decode(errors="replace"))
    source = "one-click" if body.get("List-Unsubscribe") == ["One-Click"] else "unsubscribe-link"
    try:
        await send(request, c.OptOutContact(workspace_id=payload["w"], contact_id=payload["c"],
                                            source=source))
    except (KeyError, ValueError, ValidationError):
        raise _problem(404, "token", "no such contact") from None
    return HTMLResponse(_page(payload, request, done=True))


def _verified(request: Request, purpose: str, token: str) -> dict:
    try:
        return request.app.state.signer.verify(purpose, token)
    except BadToken:
        raise _problem(404, "token", "no such link") from None


def _page(payload: dict, request: Request, done: bool) -> str:
    language = recipient_pages.page_language(payload, request.headers.get("accept-language"))
    return recipient_pages.unsubscribe_page(language, done=done)


# --- the app -----------------------------------------------------------------------------------


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.engine = create_engine(settings.database_url, pool_size=5)
        await migrate(app.state.engine, accounts.MIGRATIONS)
        app.state.nc = await connect(settings.nats_url, name="sequences-gateway")
        yield
        await app.state.nc.close()
        await app.state.engine.dispose()

    app = FastAPI(
        title="Sequences API",
        version="1",
        description="Automatic sales follow-up sequences.",
        lifespan=lifespan,
        responses=_PROBLEM_RESPONSES,
    )

    @app.middleware("http")
    async def idempotency(request: Request, call_next):
        return await idempotent(request, call_next, _problem_response)

    @app.middleware("http")
    async def authenticate_callers(request: Request, call_next):
        """Who calls /v1 (before idempotency, whose entries are kept per workspace). A request
        without a key goes on and is refused by the route; a wrong key is refused here."""
        request.state.principal = None
        authorization = request.headers.get("authorization")
        if authorization is not None and request.url.path.startswith("/v1/"):
            scheme, _, key = authorization.partition(" ")
            principal = None
            if scheme.lower() == "bearer":
                try:
                    principal = await accounts.authenticate(request.app.state.engine, key.strip())
                except DBAPIError:
                    return _problem_response(Problem(status=503, title="Database unavailable",
                                                     detail="retry in a moment"))
            if principal is None:
                return _problem_response(_problem(401, "authorization",
                                                  "this API key is not valid (unknown, revoked or"
                                                  " malformed)").problem)
            request.state.principal = principal
        return await call_next(request)

    @app.middleware("http")
    async def limit_body_size(request: Request, call_next):
        """Bodies over 1 MB are refused before they are read (CSV imports: 50 MB, checked by
        the import itself as it streams)."""
        length = request.headers.get("content-length")
        if (request.url.path != "/v1/contacts/import" and length and length.isdigit()
                and int(length) > MAX_BODY_BYTES):
            return _problem_response(Problem(
                status=413, title=rpc.title_for(413), detail="the body is over 1 MB",
                errors=[FieldError(field="body", message="the body is over 1 MB")]))
        return await call_next(request)

    @app.middleware("http")
    async def trace_requests(request: Request, call_next):
        """A server span per request: the root of the trace that follows it through NATS."""
        with _tracer.start_as_current_span(f"{request.method} {request.url.path}",
                                           kind=SpanKind.SERVER) as span:
            response = await call_next(request)
            span.set_attribute("http.status_code", response.status_code)
            return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        return _problem_response(rpc.problem_from_validation(error))

    @app.exception_handler(ValidationError)
    async def invalid_parameters(request: Request, error: ValidationError):
        """A command or query built from path and query parameters refused them."""
        return _problem_response(rpc.problem_from_validation(error))

    @app.exception_handler(ProblemError)
    async def problem(request: Request, error: ProblemError):
        return _problem_response(error.problem)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        """FastAPI's own refusals (a body that is not JSON at all, ...), as problem details."""
        return _problem_response(Problem(
            status=error.status_code, title=rpc.title_for(error.status_code),
            detail=str(error.detail),
            errors=[FieldError(field="body", message=str(error.detail))]
            if error.status_code == 400 else []))

    @app.get("/healthz", include_in_schema=False)
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request):
        """Ready when NATS is connected and the enrollment service answers through it."""
        nobody = uuid.UUID(int=0)
        checks = {"nats": request.app.state.nc.is_connected, "postgresql": False,
                  "enrollment": False}
        try:
            async with request.app.state.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["postgresql"] = True
        except DBAPIError:
            pass
        try:
            await send(request, c.GetSequence(workspace_id=nobody, sequence_id=nobody))
        except ProblemError as problem:
            checks["enrollment"] = problem.problem.status == 404
        ready = all(checks.values())
        return JSONResponse({"status": "ready" if ready else "not ready", **checks},
                            status_code=200 if ready else 503)

    asyncapi = asyncapi_document()

    @app.get("/asyncapi.json", tags=["events"])
    async def events_document():
        """The AsyncAPI document of every public event (subject, envelope, data schema)."""
        return asyncapi

    app.state.signer = signer_from_env()
    for router in (workspace, sequences, contacts, enrollments, tasks, mailboxes, webhooks,
                   tracking):
        app.include_router(router)
    if settings.clock == "adjustable":
        app.include_router(_dev_clock())
    include_web(app, settings.public_url, dev_clock=settings.clock == "adjustable")
    return app


def _dev_clock() -> APIRouter:
    dev = APIRouter(prefix="/v1/dev", tags=["dev"], dependencies=_KEY_REQUIRED)

    @dev.post("/clock/advance")
    async def advance_clock(body: c.ClockAdvance, request: Request):
        """Dev stack only: move every service's clock forward (e.g. `{"by": "2d"}`)."""
        offset = await clock.advance(request.app.state.nc.jetstream(),
                                     clock.parse_duration(body.by))
        return {"offset_seconds": offset.total_seconds()}

    return dev


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.log_level, "gateway")
    setup_tracing("sequences-gateway")
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=settings.gateway_host,
            port=settings.gateway_port,
            log_level=settings.log_level.lower(),
            access_log=False,
        )
    )
    asyncio.run(server.serve())
