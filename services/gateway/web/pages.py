"""What every page route shares: refusals become pages (sign in, not found, forbidden), and
the services are asked in the signed-in user's workspace."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Callable

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from services.gateway import bus
from services.gateway.bus import ProblemError
from services.gateway.web.session import CsrfRefused, SignInRequired, to_sign_in
from services.gateway.web.templating import render

log = logging.getLogger(__name__)


def error_page(request: Request, status: int, detail: str | None = None) -> Response:
    """The same page for an unknown id and another workspace's id: nothing tells them apart."""
    template = {404: "errors/not_found.html", 403: "errors/forbidden.html",
                503: "errors/unavailable.html"}.get(status, "errors/problem.html")
    return render(request, template, status_code=status, detail=detail)


class PageRoute(APIRoute):
    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                return to_sign_in(request)
            except CsrfRefused:
                return error_page(request, 403)
            except ProblemError as error:
                return error_page(request, error.problem.status, error.problem.detail)
            except RequestValidationError as error:
                # a malformed id in the path is as unknown as any other id
                in_path = any(e["loc"][0] == "path" for e in error.errors())
                return error_page(request, 404 if in_path else 422)

        return handle


def page_router() -> APIRouter:
    return APIRouter(route_class=PageRoute, include_in_schema=False)


async def ask(request: Request, kind: type[BaseModel], /, **fields):
    """A command or query, in the signed-in user's workspace."""
    return await bus.ask(request.app.state.nc, request.state.user.workspace_id, kind, **fields)


async def now(request: Request) -> datetime:
    """The stack's time: on a dev stack, moved as far as its adjustable clock was."""
    return await bus.stack_now(request)
