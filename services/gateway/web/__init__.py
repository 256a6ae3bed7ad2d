"""The web app for sales reps and their managers: server-rendered pages (Jinja2) made better by
htmx, in Korean and English, over the same services as the API (sent through `bus.py`, never
through the JSON API over HTTP). Routes per screen in `routes/`, templates in `templates/`,
the app's own assets and vendored front-end files (checked by checksum) in `static/`."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.gateway.api.problems import allowed_methods
from services.gateway.web.pages import error_page
from services.gateway.web.routes import auth, campaigns, contacts, dev
from services.gateway.web.routes import builder
from services.gateway.web.routes import enroll  # noqa: I001 (one line per screen: merges)
from services.gateway.web.routes import sequence_detail
from services.gateway.web.routes import tasks
from services.gateway.web.routes import timeline
from services.gateway.web.routes import settings
from services.gateway.web.routes import mailboxes
from services.gateway.web.routes import suppressions
from services.gateway.web.routes import calendar
from services.gateway.web.routes import operations

STATIC = Path(__file__).parent / "static"
# builder before the detail: /sequences/new is not a sequence's id
SCREENS = (auth, campaigns, contacts,
           builder,
           sequence_detail,
           enroll,
           tasks,
           timeline,
           settings,
           mailboxes,
           suppressions,
           calendar,
           operations,
           )  # every screen's router, in navigation order


def include_web(app: FastAPI, public_url: str, dev_clock: bool) -> None:
    app.state.public_url = public_url
    app.state.dev_clock = dev_clock
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for screen in SCREENS:
        app.include_router(screen.router)
    if dev_clock:
        app.include_router(dev.router)
    _pages_for_browsers(app)


# paths of the API, the links in emails and the documents: their refusals stay problem details
_NOT_PAGES = ("/v1/", "/t/", "/unsubscribe/", "/static/", "/openapi.json", "/docs", "/redoc",
              "/asyncapi.json", "/healthz", "/readyz")


def _pages_for_browsers(app: FastAPI) -> None:
    """An unknown address (or a method a page does not take) asked by a browser gets the app's
    page, in the reader's language; everything else the API's problem details."""
    problems = app.exception_handlers[StarletteHTTPException]

    async def page_or_problem(request: Request, error: StarletteHTTPException):
        if (not request.url.path.startswith(_NOT_PAGES)
                and "text/html" in request.headers.get("accept", "")):
            page = error_page(request, error.status_code)
            if error.status_code == 405:
                page.headers["Allow"] = ", ".join(allowed_methods(request))
            return page
        return await problems(request, error)

    app.add_exception_handler(StarletteHTTPException, page_or_problem)
