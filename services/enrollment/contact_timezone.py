"""A contact's IANA timezone, inferred at import from the row's country (with its US state) or
its phone number, only where the data decides it unambiguously; otherwise None.

Every table is derived at run time from maintained data, none is written here:
* country -> zones: `zone.tab` of the `tzdata` package (the zones of each ISO 3166 country, its
  principal zone first); links such as Asia/Calcutta -> Asia/Kolkata from its `tzdata.zi`;
* country names: ISO 3166 codes and `iso3166.tab`'s English names (tzdata), CLDR's English and
  Korean names and its alpha-3, numeric and former codes (Babel, already the app's i18n
  library);
* US states -> zones: the `us` package (`State.time_zones`); no maintained source maps the
  regions of other multi-zone countries (Canada, Australia, Brazil, Russia, ...) to zones, so
  for those only a phone number can decide;
* phone numbers -> zones: `phonenumbers` (Google's libphonenumber data), by area code where
  the number is geographic, else its country.

Zones that keep the same UTC offsets from now on (Europe/Berlin and Europe/Busingen) count as
one: the country's first such zone is the answer. Everything is cached; a row without a
country or an international (+...) number costs a few dict look-ups.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from importlib import resources
from zoneinfo import ZoneInfo

import phonenumbers
import us
from babel import Locale
from babel.core import get_global
from phonenumbers import timezone as phone_timezones

_UNKNOWN = "Etc/Unknown"  # phonenumbers' answer for a number it cannot place
_SPACES = re.compile(r"[\s._-]+")
_NOT_DIGITS = re.compile(r"\D")
_E164_DIGITS = (7, 15)  # digits of a whole international number (+290 numbers have 7)
_YEARS_COMPARED = 5  # zones agreeing on every offset for this long from now count as one


def infer_timezone(country: str = "", region: str = "", phone: str = "") -> str | None:
    """The zone the row's data decides, or None. The country (and, in the US, its state)
    decides first; where it leaves several zones, the phone number chooses among them; a number
    pointing outside the country decides nothing."""
    code, located, zone = _location(country, region)
    if zone is not None:
        return zone
    dialled = _phone_zones(phone.strip(), code) if phone else None
    if dialled is None:
        return None
    if located is None:
        return _one(dialled)
    return _one(tuple(z for z in located if z in dialled))


def country_code(value: str) -> str | None:
    """ISO 3166 alpha-2 code of a country written as its alpha-2, alpha-3 or numeric code, or
    its English or Korean name (as tzdata or CLDR write it); None when not recognised."""
    return _country_names().get(_key(value)) if value else None


def _key(text: str) -> str:
    return _SPACES.sub(" ", text).strip().casefold()


@lru_cache(maxsize=4096)
def _one(zones: tuple[str, ...]) -> str | None:
    """The first zone, when every other one keeps the same time from now on."""
    if not zones:
        return None
    first = _clock_of(zones[0])
    return zones[0] if all(_clock_of(z) == first for z in zones[1:]) else None


_clocks: dict[tuple, int] = {}  # distinct offset series -> a small number


@cache
def _clock_of(zone: str) -> int:
    """A number shared by exactly the zones with the same UTC offset twice a day over the
    next years (DST dates included)."""
    tz = ZoneInfo(zone)
    series = tuple(moment.astimezone(tz).utcoffset() for moment in _sample_moments())
    return _clocks.setdefault(series, len(_clocks))


@cache
def _sample_moments() -> tuple[datetime, ...]:
    start = datetime(datetime.now(UTC).year, 1, 1, tzinfo=UTC)
    return tuple(start + timedelta(hours=12 * i) for i in range(2 * 366 * _YEARS_COMPARED))


# --- tzdata ------------------------------------------------------------------------------------


def _tzdata(name: str) -> list[list[str]]:
    text = resources.files("tzdata.zoneinfo").joinpath(name).read_text(encoding="utf-8")
    return [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]


@cache
def _links() -> dict[str, str]:
    """Old or alias zone names -> the zone they link to (`L target name` lines of tzdata.zi)."""
    text = resources.files("tzdata.zoneinfo").joinpath("tzdata.zi").read_text(encoding="utf-8")
    return {parts[2]: parts[1] for parts in (line.split() for line in text.splitlines())
            if len(parts) == 3 and parts[0] == "L"}


def _canonical(zone: str) -> str:
    return _links().get(zone, zone)


@cache
def _country_zones() -> dict[str, tuple[str, ...]]:
    """Country -> its zones, in zone.tab's order (the principal zone first)."""
    zones: dict[str, list[str]] = {}
    for code, _coordinates, zone, *_comment in _tzdata("zone.tab"):
        zones.setdefault(code, []).append(zone)
    return {code: tuple(z) for code, z in zones.items()}


@cache
def _country_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for code, alpha2 in _aliases():
        names.setdefault(_key(code), alpha2)
    for code, name in _tzdata("iso3166.tab"):
        names[_key(code)] = code
        names.setdefault(_key(name), code)
    for language in ("en", "ko"):
        for code, name in Locale(language).territories.items():
            if code in _country_zones():  # countries, not "Europe" or "001"
                names.setdefault(_key(name), code)
    return names


def _aliases() -> list[tuple[str, str]]:
    """CLDR's alpha-3, numeric and former codes of a country ("KOR", "410", "UK" -> KR, KR,
    GB); codes split among several countries ("SU") are left out."""
    return [(alias, targets[0]) for alias, targets in get_global("territory_aliases").items()
            if len(targets) == 1 and targets[0] in _country_zones()]


# --- regions, phone numbers ----------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _location(country: str, region: str) -> tuple[str | None, tuple[str, ...] | None,
                                                  str | None]:
    """The country's code, the zones of the country (or its state), and the zone they decide,
    for the cells as written (a file repeats a few countries 100,000 times)."""
    code = country_code(country)
    if code is None:
        return None, None, None
    located = _location_zones(code, _key(region))
    return code, located, _one(located)


def _location_zones(code: str, region: str) -> tuple[str, ...]:
    zones = _country_zones().get(code, ())
    in_region = _us_state_zones().get(region) if code == "US" and region else None
    if in_region is None:
        return zones
    return tuple(z for z in zones if z in in_region) or in_region


@cache
def _us_state_zones() -> dict[str, tuple[str, ...]]:
    """US state (postal code, US-XX, or name) -> its zones."""
    found = {}
    for state in us.states.STATES_AND_TERRITORIES:
        zones = tuple(_canonical(z) for z in state.time_zones)
        for name in (state.abbr, f"US-{state.abbr}", state.name):
            found[_key(name)] = zones
    return found


def _phone_zones(phone: str, code: str | None) -> tuple[str, ...] | None:
    """The zones of a phone number: written internationally (+82 ...), or nationally when the
    row's country says whose number it is."""
    if not phone or (code is None and not phone.startswith("+")):
        return None
    if phone.startswith("+") and (whole := _calling_code_zones(phone)) and _one(whole):
        return whole  # one zone for every number of its calling code: nothing to parse
    try:
        number = phonenumbers.parse(phone, code)
    except phonenumbers.NumberParseException:
        return None
    zones = phone_timezones.time_zones_for_number(number)
    if zones and zones[0] != _UNKNOWN:
        return _ordered(zones)
    owner = phonenumbers.region_code_for_country_code(number.country_code)
    return _country_zones().get(owner)


def _calling_code_zones(phone: str) -> tuple[str, ...] | None:
    """The zones of every number of the international number's calling code (+82: Seoul),
    read without parsing the number (parsing and validating one takes 40 us or more)."""
    digits = _NOT_DIGITS.sub("", phone)
    if not _E164_DIGITS[0] <= len(digits) <= _E164_DIGITS[1]:
        return None
    for length in (1, 2, 3):
        if int(digits[:length]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            zones = phone_timezones.TIMEZONE_DATA.get(digits[:length])
            return _ordered(zones) if zones else None
    return None


@lru_cache(maxsize=4096)
def _ordered(zones: tuple[str, ...]) -> tuple[str, ...]:
    """A number's zones (as libphonenumber names them), each country's principal zone
    first."""
    order = _zone_order()
    canonical = {_canonical(z) for z in zones}
    return tuple(sorted(canonical, key=lambda z: order.get(z, len(order))))


@cache
def _zone_order() -> dict[str, int]:
    return {z: i for i, z in enumerate(z for c in _country_zones().values() for z in c)}
