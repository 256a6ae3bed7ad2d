"""The public-holiday calendars a person picks from (the builder's and Settings › Calendar's
selects): the countries of the `holidays` package, named in the reader's language by Babel's
CLDR data, and each country's subdivisions as the package names them."""

from __future__ import annotations

from functools import lru_cache

from babel import Locale


@lru_cache(maxsize=1)
def _supported() -> dict[str, list[str]]:
    from holidays import list_supported_countries

    # the package lists each country under its alpha-2 code and aliases (alpha-3, UK for GB):
    # the contract takes any, the select offers the ISO alpha-2 one
    iso = Locale.parse("en").territories
    return {code: subdivisions for code, subdivisions in list_supported_countries().items()
            if len(code) == 2 and code in iso}


@lru_cache(maxsize=8)
def countries(language: str) -> tuple[tuple[str, str], ...]:
    """(code, "대한민국 (KR)") for every supported country, in the order of its name."""
    names = Locale.parse(language).territories
    shown = [(code, f"{names.get(code, code)} ({code})") for code in _supported()]
    return tuple(sorted(shown, key=lambda item: item[1].casefold()))


@lru_cache(maxsize=512)
def subdivisions(country: str) -> tuple[tuple[str, str], ...]:
    """(code, "CA · California") for each subdivision of a supported country (none for an
    unknown one)."""
    if country not in _supported():
        return ()
    import holidays

    aliases = holidays.country_holidays(country).get_subdivision_aliases()
    return tuple((code, f"{code} · {', '.join(aliases[code])}" if aliases.get(code) else code)
                 for code in _supported()[country])


def subdivision_code(country: str, typed: str) -> str | None:
    """A posted subdivision as the package spells it: the select's code as it is ("Augsburg"),
    a typed one in capitals ("ca" is CA); None for the whole country."""
    typed = typed.strip()
    if not typed:
        return None
    return typed if typed in dict(subdivisions(country)) else typed.upper()
