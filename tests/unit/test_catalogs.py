"""Every message a person reads has its Korean translation, and the catalogs are sound."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from sequences import i18n

ROOT = Path(__file__).resolve().parents[2]
METHODS = [
    ("services/gateway/web/templates/**.html", "jinja2"),
    ("services/**.py", "python"),
    ("sequences/**.py", "python"),
]
OPTIONS = {"services/gateway/web/templates/**.html": {"extensions": "jinja2.ext.i18n"}}
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "translate": (2,), "N_": None}


def _used_messages() -> set[str]:
    found = set()
    for _, _, message, _, _ in extract_from_dir(str(ROOT), METHODS, OPTIONS, KEYWORDS):
        found.add(message[0] if isinstance(message, tuple) else message)
    return found


def _catalog(language: str):
    with (i18n.LOCALE_DIR / language / "LC_MESSAGES" / "messages.po").open("rb") as po:
        return read_po(po, locale=language)


def test_every_message_has_a_korean_translation():
    korean = _catalog("ko")
    untranslated = sorted(
        m for m in _used_messages()
        if not (korean.get(m) and (korean.get(m).string if isinstance(korean.get(m).string, str)
                                   else all(korean.get(m).string))))
    assert not untranslated, "no Korean for (run `make messages`, then translate):\n" + \
        "\n".join(untranslated)


def test_catalogs_have_no_fuzzy_or_duplicate_entries():
    for language in i18n.LANGUAGES:
        text = (i18n.LOCALE_DIR / language / "LC_MESSAGES" / "messages.po").read_text()
        ids = [line for line in text.splitlines() if line.startswith("msgid ")]
        assert len(ids) == len(set(ids)), f"{language}: a msgid appears twice"
        assert "#, fuzzy" not in text.split("\n\n", 1)[1], f"{language}: fuzzy entries"


def test_translations_keep_their_placeholders():
    import re

    korean = _catalog("ko")
    for message in korean:
        if not message.id or not message.string:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        wanted = set(re.findall(r"%\((\w+)\)s", ids[0]))
        for string in strings:
            assert set(re.findall(r"%\((\w+)\)s", string)) == wanted, message.id


def test_accept_language_picks_our_languages():
    assert i18n.from_accept_language("ko-KR,ko;q=0.9,en-US;q=0.8") == "ko"
    assert i18n.from_accept_language("en-US,en;q=0.9") == "en"
    assert i18n.from_accept_language("fr-FR, ko;q=0.5") == "ko"
    assert i18n.from_accept_language("de") == "en"
    assert i18n.from_accept_language(None) == "en"
    assert i18n.from_accept_language("ko;q=abc, en") == "en"
