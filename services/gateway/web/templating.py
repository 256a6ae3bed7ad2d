"""Pages from Jinja2 templates, in the reader's language and timezone.

Every template is autoescaped (contact names are user input). Texts are Babel messages
(`{% trans %}`, `_()`); the language is the user's setting, else the browser's
`Accept-Language`. Moments are shown in the user's timezone, or in a sequence's where it
matters (`when(moment, zone)`)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_datetime, format_timedelta
from babel.numbers import format_decimal, format_percent
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from sequences import i18n
from sequences.i18n import N_
from services.gateway.web import vendor

TEMPLATES = Path(__file__).parent / "templates"

environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    extensions=["jinja2.ext.i18n"],
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.install_null_translations(newstyle=True)
# vendored scripts by short name ("htmx" -> "vendor/htmx-2.0.11.min.js"), from their manifest
environment.globals["vendored"] = {name: f"/static/vendor/{file}"
                                   for name, file in vendor.scripts().items()}


def language_of(request: Request) -> str:
    user = getattr(request.state, "user", None)
    if user is not None and user.language:
        return user.language
    return i18n.from_accept_language(request.headers.get("accept-language"))


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


# an enrollment's status and a sequence's state, in words (a badge in every table row)
STATUS_NAMES = {"active": N_("Active"), "replied": N_("Replied"), "done": N_("Done"),
                "stopped": N_("Stopped"), "bounced": N_("Bounced"),
                "needs_attention": N_("Needs attention"), "live": N_("live"),
                "paused": N_("paused"), "archived": N_("archived")}


class Texts:
    """What a template needs of a language: messages, numbers and moments."""

    def __init__(self, language: str, timezone: str):
        self.language = language
        self.locale = i18n.locale(language)  # parsed once: Babel is twice as fast given one
        self.zone = _zone(timezone)
        self._translations = i18n.translations(language)

    def gettext(self, message: str, **values) -> str:
        # as jinja2's newstyle gettext: the values are escaped into the (trusted) message
        text = Markup(self._translations.gettext(message))
        return text % values if values else text

    def ngettext(self, singular: str, plural: str, n: int, **values) -> str:
        text = Markup(self._translations.ngettext(singular, plural, n))
        return text % {"num": n, **values}

    def status_name(self, status: str) -> str:
        message = STATUS_NAMES.get(status)
        return self._translations.gettext(message) if message else status

    def when(self, moment: datetime | None, zone: str | None = None,
             format: str = "medium") -> str:
        if moment is None:
            return ""
        return format_datetime(moment, format, tzinfo=_zone(zone) if zone else self.zone,
                               locale=self.locale)

    def ago(self, moment: datetime | None, now: datetime) -> str:
        if moment is None:
            return ""
        return format_timedelta(moment - now, add_direction=True, locale=self.locale)

    def number(self, n: int | float) -> str:
        return format_decimal(n, locale=self.locale)

    def percent(self, part: int, whole: int) -> str:
        return format_percent(part / whole, "#,##0.#%", locale=self.locale) if whole else "–"


def texts_for(request: Request) -> Texts:
    user = getattr(request.state, "user", None)
    return Texts(language_of(request), user.timezone if user else "UTC")


def render(request: Request, template: str, status_code: int = 200, headers=None,
           **context) -> HTMLResponse:
    texts = texts_for(request)
    html = environment.get_template(template).render(
        request=request, user=getattr(request.state, "user", None), t=texts,
        gettext=texts.gettext, ngettext=texts.ngettext, _=texts.gettext,
        lang=texts.language, htmx=request.headers.get("hx-request") == "true",
        dev_clock=getattr(request.app.state, "dev_clock", False), **context)
    return HTMLResponse(html, status_code=status_code, headers=headers)
