"""The bounce rule table (sequences/bounce_reasons.py, documented in docs/bounce-reasons.md):
one example per row, decided by that row, and the rules around the table (temporary failures
never blame the address, the text before the code, an unexplained failure is soft)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sequences.bounce_reasons import REASON_CLASS, RULES, classify, markdown_table, status_code

# rule id -> (status, diagnostic) that this row, and no row above it, decides
EXAMPLES = {
    "group-restricted": ("5.7.1", "550 5.7.1 RESOLVER.RST.AuthRequired; authentication required"),
    "dmarc": (None, "550-5.7.26 Unauthenticated email from sales.example is not accepted due "
                    "to domain's DMARC policy"),
    "spf-dkim": ("5.7.1", "550 5.7.1 SPF check failed for sales.example"),
    "relay": ("5.7.1", "554 5.7.1 <x@other.example>: Relay access denied"),
    "not-authenticated": ("5.7.0", "530 5.7.0 Authentication required"),
    "ptr": ("4.7.1", "450 4.7.1 Client host rejected: cannot find your reverse hostname"),
    "tls": ("5.7.0", "530 5.7.0 Must issue a STARTTLS command first"),
    "sender-address": ("5.1.8", "553 5.1.8 <me@sales.example>: Sender address rejected: "
                                "Domain not found"),
    "over-quota": ("4.2.1", "450-4.2.1 The user you are trying to contact is receiving mail "
                            "at a rate that prevents additional messages from being delivered"),
    "rate": ("4.7.0", "421 4.7.0 [TSS04] Messages from 198.51.100.7 temporarily deferred due "
                      "to unexpected volume or user complaints"),
    "block-list": ("5.7.1", "554 5.7.1 Service unavailable; Client host [198.51.100.7] "
                            "blocked using zen.spamhaus.org"),
    "virus": ("5.7.1", "554 5.7.1 Message rejected: virus found (Eicar-Test-Signature)"),
    "spam": ("5.7.1", "550-5.7.1 Our system has detected that this message is likely "
                      "unsolicited mail"),
    "mailbox-full": ("5.2.2", "552 5.2.2 <x@y.example>: Mailbox full"),
    "too-big": ("5.3.4", "552 5.3.4 Message size exceeds fixed limit"),
    "content": ("5.6.0", "554 5.6.0 Message rejected: header syntax error"),
    "suspended": ("5.2.1", "550 5.2.1 The email account that you tried to reach is disabled"),
    "system-full": ("4.3.1", "452 4.3.1 Insufficient system storage"),
    "expired": ("4.4.7", "message expired after 5 days in queue"),
    "moved": ("5.1.6", "551 5.1.6 User has moved; please try <alex@new.example>"),
    "host-unknown": ("5.4.4", "Host or domain name not found. Name service error for "
                              "name=customr.example type=A: Host not found"),
    "not-accepted": ("5.1.10", "556 5.1.10 Recipient address has null MX"),
    "directory-access-denied": ("5.4.1", "550 5.4.1 Recipient address rejected: Access "
                                         "denied. AS(201806281)"),
    "user-unknown": ("5.1.1", "550 5.1.1 <kim@customer.example>: Recipient address "
                              "rejected: User unknown in local recipient table"),
    "blocked": ("5.7.1", "550 5.7.1 Message blocked"),
    "policy": ("5.7.1", "550 5.7.1 Delivery not authorized, message refused"),
    "code-x.1.1": ("5.1.1", "550 5.1.1 <x@y.example>"),
    "code-x.1.0": ("5.1.0", "550 5.1.0 <x@y.example>"),
    "code-x.1.2": ("5.1.2", "550 5.1.2 <x@y.example>"),
    "code-x.1.3": ("5.1.3", "501 5.1.3 <x@@y.example>"),
    "code-x.1.4": ("5.1.4", "550 5.1.4 <x@y.example>"),
    "code-x.1.6": ("5.1.6", "550 5.1.6 <x@y.example>"),
    "code-x.1.7": ("5.1.7", "550 5.1.7 <me@sales.example>"),
    "code-x.1.8": ("5.1.8", "550 5.1.8 <me@sales.example>"),
    "code-x.1.10": ("5.1.10", "550 5.1.10 <x@y.example>"),
    "code-x.2.1": ("5.2.1", "550 5.2.1 <x@y.example>"),
    "code-x.2.2": ("4.2.2", "452 4.2.2 <x@y.example>"),
    "code-x.2.3": ("5.2.3", "552 5.2.3 <x@y.example>"),
    "code-x.2.4": ("5.2.4", "550 5.2.4 <list@y.example>"),
    "code-x.3.1": ("4.3.1", "452 4.3.1"),
    "code-x.3.2": ("5.3.2", "550 5.3.2"),
    "code-x.3.4": ("5.3.4", "552 5.3.4"),
    "code-x.4.1": ("4.4.1", "421 4.4.1"),
    "code-x.4.2": ("4.4.2", "421 4.4.2"),
    "code-x.4.4": ("5.4.4", "550 5.4.4"),
    "code-x.4.6": ("5.4.6", "554 5.4.6"),
    "code-x.4.7": ("4.4.7", "4.4.7"),
    "code-x.5.3": ("4.5.3", "452 4.5.3"),
    "code-x.5": ("5.5.2", "500 5.5.2"),
    "code-x.6": ("5.6.1", "554 5.6.1"),
    "code-x.7.1": ("5.7.1", "550 5.7.1 <x@y.example>"),
    "code-x.7.7": ("5.7.7", "550 5.7.7"),
    "code-x.7.8": ("5.7.8", "535 5.7.8"),
    "code-x.7.9": ("5.7.9", "534 5.7.9"),
    "code-x.7.10": ("5.7.10", "530 5.7.10"),
    "code-x.7.11": ("5.7.11", "530 5.7.11"),
    "code-x.7.13": ("5.7.13", "525 5.7.13"),
    "code-x.7.2x": ("5.7.23", "550 5.7.23"),
    "code-x.7.25": ("5.7.25", "550 5.7.25"),
    "code-x.7.28": ("4.7.28", "421 4.7.28"),
    "code-x.7": ("5.7.0", "550 5.7.0"),
    "code-551": ("551", "551 try <x@new.example>"),
    "code-552": ("552", "552 Requested mail action aborted"),
    "code-553": ("553", "553 Requested action not taken"),
    "code-452": ("452", "452 Requested action not taken"),
    "code-421": ("421", "421 Service not available, closing transmission channel"),
    "code-530-535": ("530", "530"),
}


def test_every_row_has_an_example_and_belongs_to_its_reason_class():
    assert [rule.id for rule in RULES] == list(EXAMPLES)  # in table order, one each
    assert len({rule.id for rule in RULES}) == len(RULES)
    for rule in RULES:
        assert rule.bounce_class == REASON_CLASS[rule.reason], rule.id
        # the text is case folded before matching: a capital in a pattern would never match
        assert rule.text is None or rule.text == rule.text.casefold(), rule.id


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.id)
def test_each_row_decides_its_example(rule):
    status, diagnostic = EXAMPLES[rule.id]
    verdict = classify(status, diagnostic)
    assert verdict.rule.removeprefix("temporary:") == rule.id
    assert verdict.reason == rule.reason
    assert verdict.kind == ("hard" if verdict.bounce_class == "recipient-permanent" else "soft")


def test_a_temporary_failure_never_blames_the_address():
    verdict = classify("4.1.1", "450 4.1.1 <x@y.example>: Recipient address rejected: User "
                                "unknown in local recipient table")
    assert (verdict.bounce_class, verdict.reason, verdict.rule, verdict.kind) == (
        "recipient-temporary", "user-unknown", "temporary:user-unknown", "soft")
    delayed = classify("5.1.1", "550 5.1.1 user unknown", temporary=True)  # Action: delayed
    assert (delayed.bounce_class, delayed.kind) == ("recipient-temporary", "soft")


def test_the_text_decides_before_the_code():
    # 5.1.1 says "bad address", the words say the sender is on a block list
    verdict = classify("5.1.1", "550 5.1.1 rejected: 198.51.100.7 listed at zen.spamhaus.org")
    assert (verdict.bounce_class, verdict.reason) == ("sender-side", "sender-blocked")
    # a bare 550 with words that say what happened
    assert classify("550", "550 Unrouteable address").reason == "host-unknown"


def test_the_report_prose_is_read_when_the_diagnostic_says_nothing():
    verdict = classify(None, "메일 발송 실패 안내", context="받는 사람의 메일함 용량이 초과되었습니다")
    assert (verdict.reason, verdict.rule) == ("mailbox-full", "mailbox-full")


def test_a_failure_nothing_explains_is_unclassified_and_soft():
    verdict = classify("550", "550 Message rejected")
    assert (verdict.bounce_class, verdict.reason, verdict.rule, verdict.kind) == (
        "recipient-temporary", "unclassified", "unclassified", "soft")
    assert classify(None, "").reason == "unclassified"


def test_multi_line_replies_and_full_width_text_read_as_sentences():
    verdict = classify("5.7.0", "552-5.7.0 This message was blocked because its content "
                                "presents a potential\n552-5.7.0 security issue.")
    assert verdict.reason == "content-rejected"
    assert classify(None, "５５０ ＵＳＥＲ　ＵＮＫＮＯＷＮ").reason == "user-unknown"


@pytest.mark.parametrize("text, code", [
    ("550 5.1.1 <x@y>: User unknown", "5.1.1"), ("smtp; 554 delivery error", "554"),
    ("Date: Wed, 25 Nov 2026 09:30:00", None), ("4.4.7 expired", "4.4.7"),
    ("250 2.0.0 Ok: queued", "2.0.0"),
])
def test_status_codes_are_read_from_text(text, code):
    assert status_code(text) == code


def test_the_documented_table_is_the_table():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "bounce-reasons.md").read_text()
    assert markdown_table() in doc, "regenerate it: python -m sequences.bounce_reasons"
