"""Whether two contacts are at the same company (an "account"): the base of issue 13's
colleagues' rule (a reply from one person of a company stops or pauses the company's other
enrollments). Pure: no I/O.

Same company = the company fields, when both contacts have one (compared without case, width,
spacing and legal forms: "(주)한빛상사" is "한빛상사", "Acme, Inc." is "ACME"); else the email
domain, but never a free-mail or ISP domain (gmail.com, naver.com, daum.net, hanmail.net, ...):
two Gmail users are not colleagues. The free-mail list is the npm package free-email-domains,
vendored as it is in sequences/data/free-email-domains (MANIFEST.json: version, checksums).
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "free-email-domains"
DOMAINS_FILE = DATA / "domains-1.12.6.json"

# Legal forms that say nothing about which company it is, in the languages of the product's
# users (Korean 주식회사/(주)/㈜, Japanese 株式会社, English, German, French).
_LEGAL_FORM = re.compile(
    r"\(주\)|㈜|주식회사|유한회사|\(유\)|株式会社|有限会社|\b(inc|incorporated|corp|corporation|co|"
    r"company|ltd|limited|llc|plc|gmbh|ag|sa|sas|sarl|bv|kk)\b\.?", re.IGNORECASE)
_NOT_A_NAME = re.compile(r"[\s.,&'\"()\-_/]+")


@lru_cache(maxsize=1)
def free_mail_domains() -> frozenset[str]:
    return frozenset(d.lower() for d in json.loads(DOMAINS_FILE.read_text(encoding="utf-8")))


def email_domain(email: str) -> str:
    return email.rsplit("@", 1)[-1].strip().lower() if "@" in email else ""


def is_free_mail(domain: str) -> bool:
    """A free-mail or ISP domain, or a subdomain of one (mail.naver.com)."""
    domain = domain.lower().strip(".")
    known = free_mail_domains()
    parts = domain.split(".")
    return any(".".join(parts[i:]) in known for i in range(len(parts) - 1))


def company_name(company: str | None) -> str:
    """The company field as compared: NFKC, case folded, without legal forms and punctuation."""
    if not company:
        return ""
    folded = unicodedata.normalize("NFKC", company).casefold()
    return _NOT_A_NAME.sub("", _LEGAL_FORM.sub(" ", folded))


def same_company(company_a: str | None, email_a: str, company_b: str | None,
                 email_b: str) -> tuple[bool, str]:
    """Whether two contacts are at the same company, and by what ("company", "domain" or why
    not)."""
    name_a, name_b = company_name(company_a), company_name(company_b)
    if name_a and name_b:
        return name_a == name_b, "company"
    domain_a, domain_b = email_domain(email_a), email_domain(email_b)
    if not domain_a or domain_a != domain_b:
        return False, "different domains"
    if is_free_mail(domain_a):
        return False, f"{domain_a} is a free-mail domain"
    return True, "domain"
