"""What a recipient of a sequence's email sees in the gateway: the unsubscribe page, in the
sequence's language.

The language comes from the signed unsubscribe token (`"l"`, written by the mailer from the
sequence's setting). Tokens from before it was there carry none: then the browser's
`Accept-Language` decides, else English. The page is a Jinja2 template with autoescaping and
the project's Babel catalogs (`sequences/locale`), rendered as the web app's pages are.
"""

from __future__ import annotations

from sequences import i18n
from services.gateway.web.templating import Texts, environment


def page_language(token_payload: dict, accept_language: str | None) -> str:
    """The sequence's language if the token says it, else the browser's, else English."""
    language = token_payload.get("l")
    if language in i18n.LANGUAGES:
        return language
    return i18n.from_accept_language(accept_language)


def unsubscribe_page(language: str, done: bool = False) -> str:
    """The page behind the link (one button, so link scanners do not unsubscribe), or, `done`,
    the confirmation after the button. A template of the web app's (`public/`), standing alone:
    a recipient has no session, no navigation."""
    if language not in i18n.LANGUAGES:
        language = i18n.DEFAULT_LANGUAGE
    texts = Texts(language, "UTC")
    return environment.get_template("public/unsubscribe.html").render(
        lang=language, done=done, _=texts.gettext, gettext=texts.gettext,
        ngettext=texts.ngettext)


def link_gone_page(language: str) -> str:
    """The plain page behind a forged, altered or cut-off click link: it leads nowhere."""
    if language not in i18n.LANGUAGES:
        language = i18n.DEFAULT_LANGUAGE
    texts = Texts(language, "UTC")
    return environment.get_template("public/link_gone.html").render(
        lang=language, _=texts.gettext, gettext=texts.gettext, ngettext=texts.ngettext)
