"""The JSON API under /v1 (and the links in emails): one router per resource, the shared
dependencies in `deps.py`, problem details in `problems.py`. `include_api` puts it into an app."""

from __future__ import annotations

from fastapi import FastAPI

from sequences.config import Settings
from services.gateway.api import (
    contacts,
    dev,
    enrollments,
    mailboxes,
    middleware,
    sequences,
    step_stats,
    tasks,
    tracking,
    webhooks,
    workspace,
)
from services.gateway.api.problems import add_problem_handlers

# in this order in the OpenAPI document
ROUTERS = (workspace, sequences, step_stats, contacts, enrollments, tasks, mailboxes, webhooks,
           tracking)


def include_api(app: FastAPI, settings: Settings) -> None:
    """The API's middlewares, its problem-details handlers and every router. A middleware added
    later runs first: bodies are measured, then callers known, then repeats answered."""
    for api_middleware in (middleware.idempotency, middleware.authenticate_callers,
                           middleware.limit_body_size):
        app.middleware("http")(api_middleware)
    add_problem_handlers(app)
    for module in ROUTERS:
        app.include_router(module.router)
    if settings.clock == "adjustable":
        app.include_router(dev.router)
