"""Same company (sequences/accounts.py): company fields when both are set, else the email domain,
never a free-mail one; the vendored free-mail list is the one its manifest names."""

from __future__ import annotations

import hashlib
import json

import pytest

from sequences.accounts import DATA, free_mail_domains, is_free_mail, same_company

MANIFEST = json.loads((DATA / "MANIFEST.json").read_text())


def test_the_vendored_list_is_the_npm_package_byte_for_byte_with_its_licence():
    for name, entry in MANIFEST["files"].items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == entry["sha256"], name
    assert {p.name for p in DATA.iterdir()} == {"MANIFEST.json", *MANIFEST["files"]}
    assert "Permission is hereby granted" in (DATA / "LICENSE.md").read_text()
    assert MANIFEST["version"] in next(n for n in MANIFEST["files"] if n.endswith(".json"))


@pytest.mark.parametrize("domain", [
    "gmail.com", "naver.com", "daum.net", "hanmail.net", "nate.com", "kakao.com", "outlook.com",
    "yahoo.co.jp", "docomo.ne.jp", "qq.com", "163.com", "gmx.de", "mail.naver.com"])
def test_free_mail_and_isp_domains(domain):
    assert is_free_mail(domain)


def test_a_company_domain_is_not_free_mail():
    assert len(free_mail_domains()) > 10_000
    assert not is_free_mail("hanbit.co.kr") and not is_free_mail("customer.example")


@pytest.mark.parametrize(("a", "b", "same", "by"), [
    (("(주)한빛상사", "kim@hanbit.co.kr"), ("한빛상사", "lee@other.example"), True, "company"),
    (("Acme, Inc.", "a@acme.com"), ("ACME", "b@acme.com"), True, "company"),
    (("Acme", "a@acme.com"), ("Globex", "b@acme.com"), False, "company"),  # both set: they decide
    (("", "kim@hanbit.co.kr"), (None, "LEE@Hanbit.co.kr"), True, "domain"),
    (("한빛상사", "kim@hanbit.co.kr"), ("", "lee@hanbit.co.kr"), True, "domain"),
    (("", "kim@naver.com"), ("", "lee@naver.com"), False, "naver.com is a free-mail domain"),
    (("", "kim@daum.net"), ("", "lee@daum.net"), False, "daum.net is a free-mail domain"),
    (("", "kim@hanbit.co.kr"), ("", "lee@other.co.kr"), False, "different domains"),
])
def test_same_company(a, b, same, by):
    assert same_company(*a, *b) == (same, by)
