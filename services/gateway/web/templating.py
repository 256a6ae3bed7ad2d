"""Pages from Jinja2 templates, in the reader's language and timezone.

Every template is autoescaped (contact names are user input). Texts are Babel messages
(`{% trans %}`, `_()`); the language is the user's setting, else the browser's
`Accept-Language`. Moments are shown in the user's timezone, or in a sequence's where it
matters (`when(moment, zone)`)."""

from __future__ import annotations

import functools
import re
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_date, format_datetime, format_time, format_timedelta
from babel.numbers import format_decimal, format_percent
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from contracts.texts import Text
from sequences import i18n
from sequences.i18n import N_
from services.gateway.timing import part
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

# what a reply wanted (contracts.values.ReplyIntent), on the enrollee table and the timeline
INTENT_NAMES = {"interested": N_("Interested"), "not_now": N_("Not now"),
                "not_interested": N_("Not interested"), "referral": N_("Someone else (referral)"),
                "unsubscribe": N_("Asked to be removed"), "other": N_("No clear intent")}

# why an enrollment is paused (EnrollmentPaused.reason)
PAUSE_REASONS = {"out-of-office": N_("out of office"), "account-reply": N_("a colleague replied")}
PAUSED = N_("Paused until %(date)s: %(reason)s")


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

    def say(self, text: Text | None, english: str | None = None) -> str:
        """What a service said (contracts/texts.py) in this language; `english`, what the API
        shows, when it came without a text (events written before texts were carried, and
        the sentences `said` knows)."""
        if text is not None:
            return text.render(self._translations.gettext)
        return self.said(english) or ""

    def status_name(self, status: str) -> str:
        message = STATUS_NAMES.get(status)
        return self._translations.gettext(message) if message else status

    def badge(self, status: str) -> Markup:
        """A status (an enrollment's, a sequence's state) as its badge: a method, not a
        template macro, since a table shows one a row and a macro's call costs ten times more."""
        return Markup('<span class="badge badge-%s">%s</span>') % (status, self.status_name(status))

    def intent_name(self, intent: str) -> str:
        message = INTENT_NAMES.get(intent)
        return self._translations.gettext(message) if message else intent

    def paused(self, until: datetime | str, reason: str | None) -> str:
        """"Paused until 2026-12-09: out of office" (the day in the reader's zone)."""
        return self.gettext(PAUSED, **self.pause_values(until, reason))

    def pause_values(self, until: datetime | str, reason: str | None) -> dict:
        until = datetime.fromisoformat(until) if isinstance(until, str) else until
        why = PAUSE_REASONS.get(reason or "")
        return {"date": until.astimezone(self.zone).date().isoformat(),
                "reason": self._translations.gettext(why) if why else (reason or "")}

    def when(self, moment: datetime | None, zone: str | None = None,
             format: str = "medium") -> str:
        if moment is None:
            return ""
        return _moment_in_words(moment, format, zone or self.zone.key, self.language)

    def clock(self, moment: datetime, zone: str) -> str:
        """The time of day in `zone` ("14:05"), with the weekday where it is not the reader's
        day ("Sat 02:05")."""
        there = moment.astimezone(_zone(zone))
        same_day = there.date() == moment.astimezone(self.zone).date()
        return format_time(there, "short", locale=self.locale) if same_day else \
            format_datetime(there, "EEE " + _short_time(self.locale), locale=self.locale)

    def ago(self, moment: datetime | None, now: datetime) -> str:
        if moment is None:
            return ""
        return format_timedelta(moment - now, add_direction=True, locale=self.locale)

    def moves(self, moves) -> str:
        """Why a step goes later than it fell due (`ScheduleMove`s, or their stored dicts), in
        words: "Sat: not a sending day · 2027-02-08 설날 다음날 · after 17:00: next window"."""
        return " · ".join(self._move(m if isinstance(m, dict) else m.model_dump()) for m in moves)

    def _move(self, move: dict) -> str:
        day = move["date"] if isinstance(move["date"], date) else date.fromisoformat(move["date"])
        kind, name, at = move["kind"], move.get("name") or "", move.get("at") or ""
        if kind == "not_sending_day":
            return self.gettext(N_("%(day)s: not a sending day"),
                                day=format_date(day, "EEE", locale=self.locale))
        if kind == "holiday":
            return self.gettext(N_("%(date)s %(name)s (a public holiday)"), date=day.isoformat(),
                                name=name)
        if kind == "skip_date":
            return self.gettext(N_("%(date)s %(name)s (a skip date of the workspace)"),
                                date=day.isoformat(), name=name)
        if kind == "after_window":
            return self.gettext(N_("after %(time)s: next window"), time=at)
        return self.gettext(N_("before %(time)s: waits for the window to open"), time=at)

    def duration(self, seconds: float) -> str:
        """How long, in words ("12 seconds", "3분"): ages on the operations page."""
        return format_timedelta(timedelta(seconds=seconds), threshold=1.5, locale=self.locale)

    def number(self, n: int | float) -> str:
        if type(n) is int and -1000 < n < 1000:
            return str(n)  # (plain digits in English and Korean: Babel's answer, 10 us sooner)
        return format_decimal(n, locale=self.locale)

    def percent(self, part: int, whole: int) -> str:
        return _percent_in_words(round(part / whole * 1000), self.language) if whole else "–"

    def said(self, text: str | None) -> str | None:
        """A service's English sentence (why a sequence paused, why a step is held) in the
        reader's language when it is one of `_SERVICE_SENTENCES`, else as it is."""
        if text is None:
            return None
        for pattern, message in _SERVICE_SENTENCES:
            if found := pattern.match(text):
                return self.gettext(message, **found.groupdict())
        return text


# the services' sentences a person meets in the app, in words of the catalog
_SERVICE_SENTENCES = (
    (re.compile(r"^paused by the bounce-rate guard: (?P<bounced>\d+) of (?P<deliveries>\d+)"
                r" deliveries in the last 24 hours bounced as bad addresses \((?P<rate>[\d.]+%),"
                r" limit (?P<limit>[\d.]+%)\)$"),
     N_("Paused by the bounce-rate guard: %(bounced)s of %(deliveries)s deliveries in the last"
        " 24 hours bounced as bad addresses (%(rate)s, limit %(limit)s). Check the list, then"
        " resume.")),
    (re.compile(r"^rejected for a sender-side reason \(the address is not blamed\): check the"
                r" sender mailbox, then retry \((?P<detail>.*)\)$", re.S),
     N_("Rejected for a sender-side reason (the address is not blamed): check the sender"
        " mailbox in Settings › Mailboxes, then retry. (%(detail)s)")),
    (re.compile(r"^rejected by the recipient's server for its content: edit the step"
                r" \((?P<detail>.*)\)$", re.S),
     N_("Rejected as spam (or for its content) by the recipient's server: edit the step, then"
        " retry. (%(detail)s)")),
    (re.compile(r"^(?:step (?P<step>\d+) not sent: )?(?P<email>\S+) \(or its domain\) is on the"
                r" suppression list$"),
     N_("%(email)s (or its domain) is on the suppression list: not sent.")),
    (re.compile(r"^the sender mailbox (?P<address>\S+) is paused until someone resumes it:"
                r" (?P<reason>.*)$", re.S),
     N_("The sender mailbox %(address)s is paused until someone resumes it (Settings ›"
        " Mailboxes): %(reason)s")),
)


@functools.lru_cache(maxsize=8192)
def _moment_in_words(moment: datetime, format: str, zone: str, language: str) -> str:
    """Babel's words for a moment (about 30 us each), remembered: a table of 50 enrollees
    shows two moments a row, many of them alike (enrolled together), and it is asked again
    every few seconds while it is open."""
    return format_datetime(moment, format, tzinfo=_zone(zone), locale=i18n.locale(language))


@functools.lru_cache(maxsize=4096)
def _percent_in_words(permille: int, language: str) -> str:
    """Babel's words for a rate to a tenth of a percent (about 80 us each; the sequence list
    shows two a row, mostly the same few values)."""
    return format_percent(permille / 1000, "#,##0.#%", locale=i18n.locale(language))


def _short_time(locale) -> str:
    return locale.time_formats["short"].pattern


def texts_for(request: Request) -> Texts:
    user = getattr(request.state, "user", None)
    return Texts(language_of(request), user.timezone if user else "UTC")


def render(request: Request, template: str, status_code: int = 200, headers=None,
           **context) -> HTMLResponse:
    texts = texts_for(request)
    with part("render"):
        html = environment.get_template(template).render(
            request=request, user=getattr(request.state, "user", None), t=texts,
            gettext=texts.gettext, ngettext=texts.ngettext, _=texts.gettext,
            lang=texts.language, htmx=request.headers.get("hx-request") == "true",
            dev_clock=getattr(request.app.state, "dev_clock", False), **context)
    return HTMLResponse(html, status_code=status_code, headers=headers)
