"""The gateway's one way to reach the services: a command or query over NATS request/reply, in
a workspace. The JSON API (`api/`) and the web app (`web/`) both send through here; a refusal
comes back as a `ProblemError` holding the service's problem (status and the fields at fault),
which the API answers as problem details and the app shows next to the fields."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from nats.aio.client import Client
from pydantic import BaseModel

from contracts import commands as c
from contracts.base import FieldError, Problem
from sequences import clock
from sequences.messaging import rpc
from services.gateway.timing import part


class ProblemError(Exception):
    def __init__(self, problem: Problem):
        super().__init__(problem.detail or problem.title)
        self.problem = problem


def problem(status: int, field: str, message: str) -> ProblemError:
    return ProblemError(Problem(status=status, title=rpc.title_for(status), detail=message,
                                errors=[FieldError(field=field, message=message)]))


# Seconds to wait for a reply where 10 s is too short: a segment of 100,000 takes about 10 s
# on two cores, and an answer of 503 ("retry") while it goes on to succeed misleads the caller.
# a login test may wait for a server that does not answer, up to its own 15 s timeout
_REPLY_WITHIN = {c.EnrollSegment: 120.0, c.TestMailboxSmtp: 30.0, c.TestMailboxImap: 30.0}


async def send(nc: Client, message: BaseModel):
    """Send a command or query to its service; its problem is raised as a `ProblemError`."""
    try:
        with part(type(message).__name__):
            reply = await rpc.request(nc, message,
                                      timeout=_REPLY_WITHIN.get(type(message), 10.0))
    except rpc.ServiceUnavailable:
        raise ProblemError(Problem(status=503, title="Service unavailable",
                                   detail="a service did not answer in time; retry")) from None
    if reply.problem is not None:
        raise ProblemError(reply.problem)
    return reply.result


async def ask(nc: Client, workspace_id: uuid.UUID, kind: type[BaseModel], /, **fields):
    """Build `kind` in the workspace and send it."""
    return await send(nc, kind(workspace_id=workspace_id, **fields))


async def answered(work):
    """Await work of the gateway's own (accounts, CSV import) whose refusals are `rpc.Rejected`."""
    try:
        return await work
    except rpc.Rejected as rejected:
        raise ProblemError(rejected.problem) from None


async def stack_now(request) -> datetime:
    """The stack's time: on a dev stack, moved as far as its adjustable clock was (what the
    services stamp their events with)."""
    moment = datetime.now(UTC)
    if getattr(request.app.state, "dev_clock", False):
        moment += await clock.read_offset(request.app.state.nc.jetstream())
    return moment
