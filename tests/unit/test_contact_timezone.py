"""Inferring a contact's timezone from a row's country, US state or phone number: filled only
where the data decides it, else empty."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.enrollment.contact_timezone import country_code, infer_timezone


@pytest.mark.parametrize("phone, zone", [
    ("+82 10-1234-5678", "Asia/Seoul"),        # KR mobile
    ("+82 2-312-3456", "Asia/Seoul"),          # KR Seoul landline
    ("+81 3-1234-5678", "Asia/Tokyo"),         # JP
    ("+49 30 123456", "Europe/Berlin"),        # DE landline
    ("+49 151 12345678", "Europe/Berlin"),     # DE mobile
    ("+1 212-555-0100", "America/New_York"),   # US: the area code decides
    ("+1 650 253 0000", "America/Los_Angeles"),
])
def test_a_phone_number_decides_where_its_prefix_has_one_zone(phone, zone):
    assert infer_timezone(phone=phone) == zone


@pytest.mark.parametrize("phone", [
    "+1 800 555 0100",   # US toll-free: every zone of the NANP
    "010-1234-5678",     # national format, and no country to say whose
    "not a number", "+999 1234", "",
])
def test_a_phone_number_that_does_not_decide_leaves_it_empty(phone):
    assert infer_timezone(phone=phone) is None


def test_a_national_number_is_read_in_the_rows_country():
    assert infer_timezone("US", phone="(650) 253-0000") == "America/Los_Angeles"
    assert infer_timezone("KR", phone="010-1234-5678") == "Asia/Seoul"


@pytest.mark.parametrize("country, zone", [
    ("KR", "Asia/Seoul"), ("kr", "Asia/Seoul"), ("KOR", "Asia/Seoul"), ("410", "Asia/Seoul"),
    ("South Korea", "Asia/Seoul"), ("Korea (South)", "Asia/Seoul"), ("대한민국", "Asia/Seoul"),
    ("JP", "Asia/Tokyo"), ("Japan", "Asia/Tokyo"), ("일본", "Asia/Tokyo"),
    ("FR", "Europe/Paris"), ("UK", "Europe/London"), ("United Kingdom", "Europe/London"),
    ("  india ", "Asia/Kolkata"),
    # zones that keep the same time from now on count as one: the country's principal zone
    ("DE", "Europe/Berlin"), ("독일", "Europe/Berlin"),
])
def test_a_country_with_one_zone_decides(country, zone):
    assert infer_timezone(country) == zone


@pytest.mark.parametrize("country", ["US", "미국", "United States", "CA", "AU", "BR", "RU",
                                     "CN", "ES", "PT", "Korea", "Narnia", ""])
def test_a_country_with_several_zones_or_unknown_leaves_it_empty(country):
    assert infer_timezone(country) is None


@pytest.mark.parametrize("region, zone", [
    ("CA", "America/Los_Angeles"), ("California", "America/Los_Angeles"),
    ("US-NY", "America/New_York"), ("new york", "America/New_York"),
    ("AZ", "America/Phoenix"), ("HI", "Pacific/Honolulu"),
    ("TX", None), ("FL", None),  # states with two zones
    ("Atlantis", None),          # not a state: the country alone, which does not decide
])
def test_a_us_state_decides_where_it_has_one_zone(region, zone):
    assert infer_timezone("US", region) == zone


def test_regions_of_other_countries_are_not_guessed():
    assert infer_timezone("AU", "NSW") is None
    assert infer_timezone("CA", "Ontario") is None


def test_the_phone_chooses_among_the_countrys_zones_and_never_leaves_them():
    assert infer_timezone("US", "FL", "+1 305 555 0100") == "America/New_York"
    assert infer_timezone("AU", phone="+61 2 9374 4000") == "Australia/Sydney"
    assert infer_timezone("US", phone="+82 10 1234 5678") is None  # a Korean number in the US
    # a country that decides alone is not second-guessed by the number
    assert infer_timezone("KR", phone="+1 212 555 0100") == "Asia/Seoul"


def test_country_codes():
    assert country_code("usa") == "US"
    assert country_code("Britain (UK)") == "GB"
    assert country_code("xx") is None and country_code("") is None


def test_every_zone_it_answers_is_an_iana_name_that_zoneinfo_reads():
    from zoneinfo import ZoneInfo, available_timezones
    answers = {infer_timezone(code) for code in ("KR", "JP", "DE", "FR", "IN", "NO", "GB")}
    answers.discard(None)
    assert answers <= available_timezones()
    for zone in answers:
        assert datetime(2027, 1, 1, tzinfo=UTC).astimezone(ZoneInfo(zone)).utcoffset() is not None


def test_the_timeline_says_which_zone_the_contact_had_when_enrolled():
    from services.enrollment.timeline import summarize
    assert summarize("ContactEnrolled", {"contact_timezone": "Asia/Seoul"}) == (
        "enrolled; the contact's timezone: Asia/Seoul")
    assert summarize("ContactEnrolled", {"attempt": 2}) == "enrolled again (attempt 2)"
