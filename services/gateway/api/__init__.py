"""The JSON API under /v1 (and the links in emails): one router per resource, the shared
dependencies in `deps.py`, problem details in `problems.py`. `include_api` puts it into an app."""

from __future__ import annotations

from fastapi import FastAPI

from sequences.config import Settings
from services.gateway.api import (
    calendar,
    contacts,
    dev,
    enrollments,
    mailboxes,
    middleware,
    oauth,
    sequences,
    step_stats,
    suppressions,
    tasks,
    tracking,
    webhooks,
    workspace,
)
from services.gateway.api.problems import add_problem_handlers, concrete_paths_first

# in this order in the OpenAPI document
ROUTERS = (workspace, calendar, sequences, step_stats, contacts, enrollments, suppressions, tasks,
           oauth, mailboxes, webhooks, tracking)


def include_api(app: FastAPI, settings: Settings) -> None:
    """The API's middlewares, its problem-details handlers and every router. A middleware added
    later runs first: bodies are measured, then callers known, then repeats answered, then a
    method a concrete path does not take refused (`problems.concrete_paths_first`)."""
    for api_middleware in (concrete_paths_first, middleware.idempotency,
                           middleware.authenticate_callers, middleware.limit_body_size):
        app.middleware("http")(api_middleware)
    add_problem_handlers(app)
    # the links in emails are routed first: a request's route is found by trying the routes in
    # order, and the click redirects are the gateway's most frequent requests (after ~100
    # routes, finding theirs took about a millisecond); the document keeps ROUTERS' tag order
    routed = (tracking,) + tuple(m for m in ROUTERS if m is not tracking)
    for module in routed:
        app.include_router(module.router)
    app.openapi_tags = [{"name": name} for name in
                        dict.fromkeys(tag for m in ROUTERS for tag in m.router.tags)]
    webhooks.document_payloads(app)
    if settings.clock == "adjustable":
        app.include_router(dev.router)
