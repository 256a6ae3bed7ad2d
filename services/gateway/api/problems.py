"""Problem details (RFC 9457, `application/problem+json`): every refusal of the JSON API, its
own and FastAPI's, answers in this one shape."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import ValidationError
from starlette.routing import Match
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.base import FieldError, Problem
from sequences.messaging import rpc
from services.gateway.bus import ProblemError

PROBLEM_JSON = "application/problem+json"
# documented on every operation: each of them can answer any of these
PROBLEM_RESPONSES = {
    status: {"model": Problem, "content": {PROBLEM_JSON: {}}}
    for status in (400, 401, 404, 409, 413, 415, 422, 503)
}


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    if problem.status == 401:
        headers = {"WWW-Authenticate": "Bearer", **(headers or {})}
    return JSONResponse(problem.model_dump(), status_code=problem.status, media_type=PROBLEM_JSON,
                        headers=headers)


async def invalid_request(request: Request, error: RequestValidationError):
    return problem_response(rpc.problem_from_validation(error))


async def invalid_parameters(request: Request, error: ValidationError):
    """A command or query built from path and query parameters refused them."""
    return problem_response(rpc.problem_from_validation(error))


async def refused(request: Request, error: ProblemError):
    return problem_response(error.problem)


async def http_error(request: Request, error: StarletteHTTPException):
    """FastAPI's own refusals (a body that is not JSON at all, a method the path does not
    have, ...), as problem details."""
    headers = {"Allow": ", ".join(allowed_methods(request))} if error.status_code == 405 else None
    return problem_response(Problem(
        status=error.status_code, title=rpc.title_for(error.status_code),
        detail=str(error.detail),
        errors=[FieldError(field="body", message=str(error.detail))]
        if error.status_code == 400 else []), headers)


def allowed_methods(request: Request) -> list[str]:
    """The methods routes of the app take at this path (RFC 9110: a 405 says them in `Allow`).
    Starlette's 405 names only the first route that matched, and most paths have one route per
    method. As OpenAPI matches paths, a concrete one goes before a templated one: at
    /v1/contacts/import it is the import, not the contact whose id would be "import"."""
    at_path = [route for route in iter_route_contexts(request.app.routes)
               if route.methods and route.matches(dict(request.scope))[0] != Match.NONE]
    concrete = [route for route in at_path if "{" not in route.path_format]
    return sorted({method for route in concrete or at_path for method in route.methods})


async def concrete_paths_first(request: Request, call_next):
    """A middleware: as OpenAPI matches paths, a concrete path goes before a templated one,
    whatever the method. So `PATCH /v1/contacts/import` is the import's path refusing PATCH
    (405, `Allow: POST`), not a contact whose id would be "import" (422, "not a UUID")."""
    taken = _concrete_paths(request.app).get(request.url.path)
    if taken is not None and request.method not in taken:
        return await http_error(request, StarletteHTTPException(405))
    return await call_next(request)


def _concrete_paths(app: FastAPI) -> dict[str, set[str]]:
    """The API's paths without a parameter and the methods each takes (made once per app)."""
    if not hasattr(app.state, "concrete_paths"):
        paths: dict[str, set[str]] = {}
        for route in iter_route_contexts(app.routes):
            if route.methods and route.path_format and route.path_format.startswith("/v1/") \
                    and "{" not in route.path_format:
                paths.setdefault(route.path_format, set()).update(route.methods)
        app.state.concrete_paths = paths
    return app.state.concrete_paths


def add_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(ValidationError, invalid_parameters)
    app.add_exception_handler(ProblemError, refused)
    app.add_exception_handler(StarletteHTTPException, http_error)
