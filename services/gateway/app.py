"""The gateway: the HTTP API (FastAPI). It holds no business state: it validates input with the
contract models, sends commands and queries to the services over NATS, and answers with theirs."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager
from datetime import datetime

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from contracts.base import Problem
from contracts.commands import (
    ArchiveSequence,
    ChangeSequenceSteps,
    ClockAdvance,
    CreateContact,
    CreateSequence,
    EnrollContact,
    EnrollmentRequest,
    GetContact,
    GetEnrollment,
    GetSequence,
    ListEnrollments,
    PauseSequence,
    PreviewSchedule,
    ResumeSequence,
    StepsRequest,
)
from contracts.views import ContactView, Created, EnrollmentView, SchedulePreview, SequenceView
from sequences import clock
from sequences.bootstrap import configure_logging
from sequences.config import Settings
from sequences.messaging import rpc
from sequences.messaging.nats import connect
from sequences.tracing import setup_tracing

PROBLEM_JSON = "application/problem+json"
_PROBLEM_RESPONSES = {
    status: {"model": Problem, "content": {PROBLEM_JSON: {}}} for status in (404, 409, 422, 503)
}


class ProblemError(Exception):
    def __init__(self, problem: Problem):
        self.problem = problem


def _problem_response(problem: Problem) -> JSONResponse:
    return JSONResponse(problem.model_dump(), status_code=problem.status, media_type=PROBLEM_JSON)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.nc = await connect(settings.nats_url, name="sequences-gateway")
        yield
        await app.state.nc.close()

    app = FastAPI(
        title="Sequences API",
        version="1",
        description="Automatic sales follow-up sequences.",
        lifespan=lifespan,
        responses=_PROBLEM_RESPONSES,
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        return _problem_response(rpc.problem_from_validation(error))

    @app.exception_handler(ProblemError)
    async def problem(request: Request, error: ProblemError):
        return _problem_response(error.problem)

    async def ask(request: Request, message: BaseModel):
        try:
            reply = await rpc.request(request.app.state.nc, message)
        except rpc.ServiceUnavailable:
            raise ProblemError(Problem(status=503, title="Service unavailable",
                                       detail="the enrollment service did not answer; retry"))
        if reply.problem is not None:
            raise ProblemError(reply.problem)
        return reply.result

    @app.get("/healthz", include_in_schema=False)
    async def healthz():
        return {"status": "ok"}

    @app.post("/v1/sequences", status_code=201, response_model=Created, tags=["sequences"])
    async def create_sequence(body: CreateSequence, request: Request):
        """Save a sequence; it is live at once."""
        return await ask(request, body)

    @app.get("/v1/sequences/{sequence_id}", response_model=SequenceView, tags=["sequences"])
    async def get_sequence(sequence_id: uuid.UUID, request: Request):
        return await ask(request, GetSequence(sequence_id=sequence_id))

    @app.put("/v1/sequences/{sequence_id}/steps", response_model=SequenceView, tags=["sequences"])
    async def change_steps(sequence_id: uuid.UUID, body: StepsRequest, request: Request):
        """Replace the steps. Keep a step by sending its `step_id`; what enrollees already ran is
        never rewritten, and their pending steps are re-planned."""
        await ask(request, ChangeSequenceSteps(sequence_id=sequence_id, steps=body.steps))
        return await ask(request, GetSequence(sequence_id=sequence_id))

    for action, command in (("pause", PauseSequence), ("resume", ResumeSequence),
                            ("archive", ArchiveSequence)):
        _sequence_action(app, ask, action, command)

    @app.get("/v1/sequences/{sequence_id}/schedule", response_model=SchedulePreview,
             tags=["sequences"])
    async def preview_schedule(sequence_id: uuid.UUID, request: Request,
                               start: datetime | None = None):
        """When each step would go out for someone enrolled at `start` (default now), in the
        sequence's local time and in UTC."""
        return await ask(request, PreviewSchedule(sequence_id=sequence_id, start=start))

    @app.post("/v1/contacts", status_code=201, response_model=Created, tags=["contacts"])
    async def create_contact(body: CreateContact, request: Request):
        return await ask(request, body)

    @app.get("/v1/contacts/{contact_id}", response_model=ContactView, tags=["contacts"])
    async def get_contact(contact_id: uuid.UUID, request: Request):
        return await ask(request, GetContact(contact_id=contact_id))

    @app.post(
        "/v1/sequences/{sequence_id}/enrollments",
        status_code=201,
        response_model=Created,
        tags=["enrollments"],
    )
    async def enroll(sequence_id: uuid.UUID, body: EnrollmentRequest, request: Request):
        """Enroll one contact: the first step is planned at once."""
        return await ask(request, EnrollContact(sequence_id=sequence_id, contact_id=body.contact_id))

    @app.get(
        "/v1/sequences/{sequence_id}/enrollments",
        response_model=list[EnrollmentView],
        tags=["enrollments"],
    )
    async def list_enrollments(sequence_id: uuid.UUID, request: Request):
        return await ask(request, ListEnrollments(sequence_id=sequence_id))

    @app.get("/v1/enrollments/{enrollment_id}", response_model=EnrollmentView, tags=["enrollments"])
    async def get_enrollment(enrollment_id: uuid.UUID, request: Request):
        return await ask(request, GetEnrollment(enrollment_id=enrollment_id))

    if settings.clock == "adjustable":

        @app.post("/v1/dev/clock/advance", tags=["dev"])
        async def advance_clock(body: ClockAdvance, request: Request):
            """Dev stack only: move every service's clock forward (e.g. `{"by": "2d"}`)."""
            offset = await clock.advance(
                request.app.state.nc.jetstream(), clock.parse_duration(body.by)
            )
            return {"offset_seconds": offset.total_seconds()}

    return app


def _sequence_action(app: FastAPI, ask, action: str, command: type[BaseModel]) -> None:
    async def act(sequence_id: uuid.UUID, request: Request):
        await ask(request, command(sequence_id=sequence_id))
        return await ask(request, GetSequence(sequence_id=sequence_id))

    act.__doc__ = {
        "pause": "Pause: every enrollee's pending step is held until resumed.",
        "resume": "Resume: held steps go on; missed ones are re-planned from now by the same rules.",
        "archive": "Archive: no new enrollments, nothing more goes out.",
    }[action]
    app.post(f"/v1/sequences/{{sequence_id}}/{action}", response_model=SequenceView,
             tags=["sequences"], name=f"{action}_sequence")(act)


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
