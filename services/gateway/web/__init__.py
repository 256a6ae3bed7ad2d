"""The web app for sales reps and their managers: server-rendered pages (Jinja2) made better by
htmx, in Korean and English, over the same services as the API (sent through `bus.py`, never
through the JSON API over HTTP). Routes per screen in `routes/`, templates in `templates/`,
the app's own assets and vendored front-end files (checked by checksum) in `static/`."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from services.gateway.web.routes import auth, builder, campaigns, dev

STATIC = Path(__file__).parent / "static"
SCREENS = (auth, campaigns, builder)  # every screen's router, in navigation order


def include_web(app: FastAPI, public_url: str, dev_clock: bool) -> None:
    app.state.public_url = public_url
    app.state.dev_clock = dev_clock
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for screen in SCREENS:
        app.include_router(screen.router)
    if dev_clock:
        app.include_router(dev.router)
