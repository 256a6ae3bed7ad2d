"""`contracts.values.Email` answers exactly as pydantic's `EmailStr`: the same addresses accepted,
the same normalized value, the same refusals, whether or not their domain was seen before."""

from __future__ import annotations

import pytest
from pydantic import EmailStr, TypeAdapter, ValidationError

from contracts import values
from contracts.values import Email

ADDRESSES = [
    "kim@example.com", "Kim.Min-Jun@Example.COM", "kim+sales@example.com", "x@sub.example.co.kr",
    "o'brien@example.com", "a!#$%&'*+/=?^_`{|}~-z@example.com", "Postmaster@example.com",
    "SALES@example.com", "info@Example.com", "user@xn--bcher-kva.example", "user@bücher.example",
    "고객@example.com", "kim@example.com ", " kim@example.com", "Kim <kim@example.com>",
    '"kim lee"@example.com', "kim..lee@example.com", ".kim@example.com", "kim.@example.com",
    "kim@example", "kim@-example.com", "kim@example-.com", "kim@exa_mple.com", "kim@example..com",
    "kim@localhost", "kim@example.test", "kim@123.123.123.123", "kim@[127.0.0.1]", "@example.com",
    "kim@", "kim", "kim@@example.com", "kim@example.com\n", "a" * 64 + "@example.com",
    "a" * 65 + "@example.com", "a" * 240 + "@example.com", "a" * 245 + "@example.com",
    "kim@" + "a" * 64 + ".com", "kim@EXAMPLE.COM", "kim@example.com.",
]


def _answer(adapter: TypeAdapter, value: str):
    try:
        return ("ok", adapter.validate_python(value))
    except ValidationError as error:
        return ("refused", [e["msg"] for e in error.errors()])


@pytest.mark.parametrize("address", ADDRESSES)
def test_an_address_gets_the_answer_emailstr_gives_before_and_after_its_domain_is_known(address):
    values._known_domains.clear()
    reference, fast = TypeAdapter(EmailStr), TypeAdapter(Email)
    expected = _answer(reference, address)
    assert _answer(fast, address) == expected  # domain not known yet
    assert _answer(fast, address) == expected  # and now known (when accepted)
    for other in ADDRESSES:  # every domain accepted so far known: the same answers still
        _answer(fast, other)
    assert _answer(fast, address) == expected


def test_a_known_domain_does_not_let_a_bad_local_part_through():
    values._known_domains.clear()
    fast = TypeAdapter(Email)
    assert fast.validate_python("kim@example.com") == "kim@example.com"
    assert "example.com" in values._known_domains
    for bad in ("kim..lee@example.com", "kim lee@example.com", "@example.com",
                "a" * 250 + "@example.com", "고객@example.com\r"):
        with pytest.raises(ValidationError):
            fast.validate_python(bad)


def test_the_json_schema_is_emailstrs():
    assert TypeAdapter(Email).json_schema() == TypeAdapter(EmailStr).json_schema()
