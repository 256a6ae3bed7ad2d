"""When an out-of-office answer says its writer is back: the return date named in its subject and
text, read by dateparser with the language hinted (py3langid identifies it among the eight the
product reads: English, Korean, Japanese, German, French, Spanish, Portuguese, Chinese), relative
to the auto-reply's own Date header. Pure: no I/O. docs/out-of-office.md says what is caught.

A date more than `MAX_AHEAD` after the message, or not after it, or impossible ("February 30"),
is no date: the caller pauses for its default then.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache

LANGUAGES = ("en", "ko", "ja", "de", "fr", "es", "pt", "zh")
MAX_AHEAD = timedelta(days=90)
# How each language writes a numeric date (07.12.2026 is the 7th of December in German).
_DATE_ORDER = {"en": "MDY", "de": "DMY", "fr": "DMY", "es": "DMY", "pt": "DMY",
               "ko": "YMD", "ja": "YMD", "zh": "YMD"}
# Chinese, Japanese and Korean month-day dates ("12月6日", "12월 8일"): dateparser 1.5 reads the
# Chinese form as a year away; they are rewritten as ISO dates before it reads the text.
_CJK_DATE = re.compile(r"(?:(\d{4})\s*[年년]\s*)?(\d{1,2})\s*[月월]\s*(\d{1,2})\s*[日일号號]")
# "다음 주 월요일" (Monday next week): dateparser reads only "다음 주".
_KO_NEXT_WEEKDAY = re.compile(r"다음\s*주\s*([월화수목금토일])요일")
_KO_WEEKDAYS = "월화수목금토일"
_LIMIT = 2000  # characters read: an auto-reply says it at the start


@dataclass(frozen=True)
class ReturnDate:
    on: date | None  # the last day the text names as the end of the absence; None: none usable
    language: str
    note: str  # what was found, for the timeline and `sequences mail classify`


@lru_cache(maxsize=1)
def _identifier():
    from sequences.language_model import identifier  # py3langid's packaged model, compactly
    return identifier(LANGUAGES)


def warm_up() -> None:
    """Load the language model and dateparser's data (seconds, once per process) before the
    first auto-reply needs them, so that one does not hold up the watcher's mailbox loop."""
    return_date("Out of office until Monday, December 7. 12월 7일까지 부재중입니다.",
                datetime(2026, 12, 1))


def language_of(text: str) -> str:
    return _identifier().classify(text)[0]


def return_date(text: str, sent_at: datetime | None) -> ReturnDate:
    """The return date named in `text` (subject and body of the auto-reply), read relative to
    `sent_at` (its Date header; None: nothing can be resolved)."""
    text = text[:_LIMIT]
    language = language_of(text) if text.strip() else "en"
    if sent_at is None:
        return ReturnDate(None, language, "no Date header to read the return date against")
    base = sent_at.replace(tzinfo=None)
    found = _dates(_rewritten(text, base.date()), language, base)
    ahead = [d for d in found if base.date() < d <= base.date() + MAX_AHEAD]
    if ahead:
        return ReturnDate(max(ahead), language, f"return date {max(ahead).isoformat()}"
                                                f" ({language})")
    far = [d for d in found if d > base.date() + MAX_AHEAD]
    if far:
        return ReturnDate(None, language, f"a date more than {MAX_AHEAD.days} days out"
                                          f" ({max(far).isoformat()}): taken as none")
    return ReturnDate(None, language, "no return date found")


def _rewritten(text: str, today: date) -> str:
    def cjk(match: re.Match) -> str:
        year, month, day = match.group(1), int(match.group(2)), int(match.group(3))
        try:
            named = date(int(year) if year else today.year, month, day)
        except ValueError:
            return " "  # an impossible date is no date
        if not year and named < today:
            named = named.replace(year=today.year + 1)
        return f" {named.isoformat()} "

    def next_weekday(match: re.Match) -> str:
        monday = today + timedelta(days=7 - today.weekday())
        return f" {(monday + timedelta(days=_KO_WEEKDAYS.index(match.group(1)))).isoformat()} "

    return _CJK_DATE.sub(cjk, _KO_NEXT_WEEKDAY.sub(next_weekday, text))


def _dates(text: str, language: str, base: datetime) -> list[date]:
    """The ISO dates the rewrite wrote, and what dateparser finds in the sentences that can
    name a date (its search costs about half a millisecond a character: only those are read)."""
    from dateparser.search import search_dates
    named = [date.fromisoformat(iso) for iso in _ISO_DATE.findall(text)]
    settings = {"RELATIVE_BASE": base, "PREFER_DATES_FROM": "future",
                "DATE_ORDER": _DATE_ORDER.get(language, "MDY"),
                "RETURN_AS_TIMEZONE_AWARE": False}
    candidates = _ISO_DATE.sub(" ", _dated_sentences(text, language))
    if not candidates.strip():
        return named
    try:
        found = search_dates(candidates, languages=[language], settings=settings) or []
    except Exception:  # dateparser on odd text: no date rather than no answer
        return named
    return named + [moment.date() for words, moment in found if _a_date(words)]


_ISO_DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})\b")
# a sentence ends at a full stop not after a digit (German "4. Dezember" is one sentence)
_SENTENCE_END = re.compile(r"(?<=\D[.!?])\s+|\n+|(?<=[。！？])")


def _dated_sentences(text: str, language: str) -> str:
    """The sentences with a digit or one of the language's date words (dateparser's own locale
    data: month and weekday names, "tomorrow", "next week", ...)."""
    words = _date_words(language)
    return "\n".join(sentence for sentence in _SENTENCE_END.split(text)
                     if re.search(r"\d", sentence) or words.search(sentence))


@lru_cache(maxsize=len(LANGUAGES))
def _date_words(language: str) -> re.Pattern[str]:
    from dateparser.languages.loader import default_loader
    info = default_loader.get_locale(language).info
    names = [name for key in (*_MONTHS, *_WEEKDAYS) for name in info.get(key, [])]
    names += [word for words in info.get("relative-type", {}).values() for word in words]
    names = sorted({n for n in names if len(n) > 1 and not n.isdigit()}, key=len, reverse=True)
    return re.compile("|".join(re.escape(n) for n in names), re.IGNORECASE)


_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december")
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _a_date(words: str) -> bool:
    """Not a bare number ("30", "2026": a day or year alone says nothing) and not a two-letter
    word dateparser takes for a weekday ("We")."""
    words = words.strip()
    if re.fullmatch(r"[\d\s.,:/-]*\d{1,4}", words) and not re.search(r"\d[./-]\d", words):
        return False
    return not (words.isascii() and words.isalpha() and len(words) < 3)
