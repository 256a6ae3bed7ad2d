"""What a recipient of a sequence's email sees in the gateway: the unsubscribe page, in the
sequence's language.

The language comes from the signed unsubscribe token (`"l"`, written by the mailer from the
sequence's setting). Tokens from before it was there carry none: then the browser's
`Accept-Language` decides, else English. The page is a Jinja2 template with autoescaping and
the project's Babel catalogs (`sequences/locale`) through `jinja2.ext.i18n`.
"""

from __future__ import annotations

import functools
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from sequences import i18n

TEMPLATES = Path(__file__).parent / "templates_public"


def page_language(token_payload: dict, accept_language: str | None) -> str:
    """The sequence's language if the token says it, else the browser's, else English."""
    language = token_payload.get("l")
    if language in i18n.LANGUAGES:
        return language
    return i18n.from_accept_language(accept_language)


@functools.cache
def _environment(language: str) -> Environment:
    """One environment per language: `install_gettext_translations` binds the catalog to it."""
    environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=StrictUndefined, extensions=["jinja2.ext.i18n"])
    environment.install_gettext_translations(i18n.translations(language), newstyle=True)
    return environment


def unsubscribe_page(language: str, done: bool = False) -> str:
    """The page behind the link (one button, so link scanners do not unsubscribe), or, `done`,
    the confirmation after the button."""
    if language not in i18n.LANGUAGES:
        language = i18n.DEFAULT_LANGUAGE
    template = _environment(language).get_template("unsubscribe.html")
    return template.render(lang=language, done=done)
