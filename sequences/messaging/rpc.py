"""Commands and queries as NATS request/reply, answered by a queue group of service replicas.

The reply is a `contracts.base.Reply`: a result, or a problem naming the fields at fault.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError

from contracts.base import FieldError, Problem, Reply
from contracts.subjects import service_queue
from sequences import logs
from sequences.tracing import context_from, current_trace_headers, tracer

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

RequestHandler = Callable[[Any], Awaitable[Any]]


class Rejected(Exception):
    """A command the service refuses: becomes a 4xx problem naming the field."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.problem = Problem(
            status=status,
            title=title_for(status),
            detail=message,
            errors=[FieldError(field=field, message=message)] if field else [],
        )


_TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 409: "Conflict", 413: "Too large", 415: "Unsupported media type",
           422: "Invalid input"}


def title_for(status: int) -> str:
    return _TITLES.get(status, "Rejected")


def problem_from_validation(error: ValidationError, prefix: str = "") -> Problem:
    return Problem(
        status=422,
        title="Invalid input",
        detail="; ".join(f"{_field(e['loc'], prefix)}: {e['msg']}" for e in error.errors()),
        errors=[FieldError(field=_field(e["loc"], prefix), message=e["msg"]) for e in error.errors()],
    )


def _field(loc: tuple, prefix: str) -> str:
    """`("body", "steps", 0, "subject")` -> `steps[0].subject`; path and query keep their prefix."""
    if loc and loc[0] == "body":
        loc = loc[1:]
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


@dataclass(frozen=True)
class AtOnce:
    """A handler that may answer up to `count` requests at a time (in `serve`'s handlers):
    others are answered one at a time, in order. For the import's chunks, whose transactions
    never share a row (a file repeats no address): one's PostgreSQL work goes on while the
    next one's Python runs."""

    handler: RequestHandler
    count: int


async def serve(
    nc: Client, service: str, handlers: dict[type[BaseModel], RequestHandler | AtOnce]
) -> None:
    """Answer every command and query in `handlers` (one subscription each, shared by replicas)."""
    for model, handler in handlers.items():
        if isinstance(handler, AtOnce):
            respond = _several_at_once(_responder(model, handler.handler), handler.count)
        else:
            respond = _responder(model, handler)
        await nc.subscribe(model.nats_subject(), queue=service_queue(service), cb=respond)


def _several_at_once(respond, count: int):
    """NATS hands a subscription's messages over one at a time: each is answered in a task of
    its own, at most `count` at once (the next one waits for a free slot, held in NATS)."""
    slots = asyncio.Semaphore(count)
    running: set[asyncio.Task] = set()  # (tasks are only weakly referenced by the loop)

    def done(task: asyncio.Task) -> None:
        running.discard(task)
        slots.release()
        if not task.cancelled() and task.exception() is not None:  # (the answer's own errors
            log.error("answering failed", exc_info=task.exception())  # are answered)

    async def accept(msg: Msg) -> None:
        await slots.acquire()
        task = asyncio.create_task(respond(msg))
        running.add(task)
        task.add_done_callback(done)

    return accept


def _responder(model: type[BaseModel], handler: RequestHandler):
    async def respond(msg: Msg) -> None:
        with _tracer.start_as_current_span(
            f"handle {model.__name__}",
            context=context_from(msg.headers or {}),
            kind=SpanKind.SERVER,
        ):
            reply = await _answer(model, handler, msg.data)
        await msg.respond(reply.model_dump_json().encode())

    return respond


async def _answer(model: type[BaseModel], handler: RequestHandler, data: bytes) -> Reply:
    try:
        request = model.model_validate_json(data)
    except ValidationError as error:
        return Reply(problem=problem_from_validation(error))
    with logs.about(getattr(request, "workspace_id", None)):
        return await _answer_valid(model, handler, request)


async def _answer_valid(model: type[BaseModel], handler: RequestHandler,
                        request: BaseModel) -> Reply:
    for attempt in (1, 2):
        try:
            result = await handler(request)
            break
        except Rejected as rejected:
            return Reply(problem=rejected.problem)
        except DBAPIError as error:
            if error.connection_invalidated and attempt == 1:
                continue  # a connection PostgreSQL dropped (it restarted): once more, anew
            log.exception("%s failed", model.__name__)
            return Reply(problem=Problem(status=503, title="Database unavailable",
                                        detail="retry in a moment"))
        except Exception:
            log.exception("%s failed", model.__name__)
            return Reply(problem=Problem(status=500, title="Internal error"))
    if isinstance(result, BaseModel):
        result = result.model_dump(mode="json")
    elif isinstance(result, list):
        result = [r.model_dump(mode="json") if isinstance(r, BaseModel) else r for r in result]
    return Reply(result=result)


class ServiceUnavailable(Exception):
    pass


async def request(nc: Client, message: BaseModel, timeout: float = 10.0) -> Reply:
    with _tracer.start_as_current_span(f"request {type(message).__name__}", kind=SpanKind.CLIENT):
        try:
            response = await nc.request(
                type(message).nats_subject(),
                # unset fields stay unset, so "not given" reaches the service as such
                message.model_dump_json(exclude_unset=True).encode(),
                timeout=timeout,
                headers=current_trace_headers(),
            )
        except (NoRespondersError, NatsTimeoutError, TimeoutError) as error:
            raise ServiceUnavailable(type(message).nats_subject()) from error
    return Reply.model_validate_json(response.data)
