"""Korean and English: one Babel message catalog per language (`sequences/locale/<lang>/
LC_MESSAGES/messages.po`) for every text a person reads: the web app's pages (Jinja2 with
`jinja2.ext.i18n`), and what recipients see (the unsubscribe link and page, in the sequence's
language).

The `.po` files are the source; they are compiled in memory when first used, so there is no
`.mo` to forget to rebuild. `make messages` collects every message of the templates and of
`translate(language, "...")` calls into the catalogs (new ones untranslated);
`tests/unit/test_catalogs.py` fails while a message has no Korean translation.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

from babel import Locale, negotiate_locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGES = ("en", "ko")
DEFAULT_LANGUAGE = "en"


@functools.cache
def translations(language: str) -> Translations:
    """The compiled catalog of a language (English when it has none)."""
    if language not in LANGUAGES:
        language = DEFAULT_LANGUAGE
    with (LOCALE_DIR / language / "LC_MESSAGES" / "messages.po").open("rb") as po:
        catalog = read_po(po, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


def N_(message: str) -> str:
    """Marks a message for the catalogs where it is defined; translated where it is shown."""
    return message


def translate(language: str, message: str, **values) -> str:
    """`message` in `language` (Python code's way; templates use `_()` and `{% trans %}`)."""
    text = translations(language).gettext(message)
    return text % values if values else text


def from_accept_language(header: str | None) -> str:
    """The best of our languages for an `Accept-Language` header (English if none fits)."""
    wanted = []
    for part in (header or "").split(","):
        tag, _, quality = part.strip().partition(";q=")
        try:
            weight = float(quality) if quality else 1.0
        except ValueError:
            continue
        if tag and tag != "*":
            wanted.append((weight, tag.replace("-", "_")))
    preferred = [tag for _, tag in sorted(wanted, key=lambda w: -w[0])]
    return negotiate_locale(preferred, LANGUAGES, sep="_") or _by_language(preferred)


def _by_language(preferred: list[str]) -> str:
    for tag in preferred:
        if tag.split("_")[0].lower() in LANGUAGES:
            return tag.split("_")[0].lower()
    return DEFAULT_LANGUAGE


@functools.cache
def locale(language: str) -> Locale:
    return Locale.parse(language if language in LANGUAGES else DEFAULT_LANGUAGE)
