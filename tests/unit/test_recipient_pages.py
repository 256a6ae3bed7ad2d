"""The unsubscribe page recipients see, in the sequence's language
(services/gateway/recipient_pages.py), and the catalogs behind it and the email footer."""

from __future__ import annotations

import re

import pytest
from babel.messages.pofile import read_po

from sequences import i18n
from services.gateway.recipient_pages import page_language, unsubscribe_page


def test_the_korean_page_is_korean_with_one_button_and_no_english():
    page = unsubscribe_page("ko")
    assert '<html lang="ko">' in page
    assert "<title>수신 거부</title>" in page and "<h1>수신 거부</h1>" in page
    assert "이 메일을 더 이상 받지 않으시겠습니까?" in page
    assert len(re.findall(r"<form\b", page)) == 1 and '<form method="post">' in page
    assert re.findall(r"<button\b[^>]*>([^<]*)</button>", page) == ["수신 거부"]
    assert "Unsubscribe" not in page


def test_the_english_page_is_english():
    page = unsubscribe_page("en")
    assert '<html lang="en">' in page and "<title>Unsubscribe</title>" in page
    assert re.findall(r"<button\b[^>]*>([^<]*)</button>", page) == ["Unsubscribe"]


@pytest.mark.parametrize("language, title, says", [
    ("ko", "수신 거부 완료", "앞으로 이 메일을 보내 드리지 않겠습니다."),
    ("en", "Unsubscribed", "You will not receive these emails again."),
])
def test_the_confirmation_page_has_no_form(language, title, says):
    page = unsubscribe_page(language, done=True)
    assert f'<html lang="{language}">' in page and f"<title>{title}</title>" in page
    assert says in page and "<form" not in page


def test_an_unknown_language_gets_the_english_page():
    assert unsubscribe_page("fr") == unsubscribe_page("en")


@pytest.mark.parametrize("payload, accept_language, expected", [
    ({"l": "ko"}, "en-US,en;q=0.9", "ko"),  # the sequence's language wins over the browser's
    ({"l": "en"}, "ko-KR", "en"),
    ({}, "ko-KR,ko;q=0.9,en;q=0.8", "ko"),  # a token from before the language was in it
    ({}, "fr-FR,en;q=0.5", "en"),
    ({}, None, "en"),
    ({"l": "<script>"}, "ko", "ko"),  # not one of ours: as if absent
])
def test_the_page_language_is_the_token_s_else_the_browser_s_else_english(
        payload, accept_language, expected):
    assert page_language(payload, accept_language) == expected


@pytest.mark.parametrize("language", ["ko", "en"])
def test_every_message_of_the_catalogs_is_in_both(language):
    """Both catalogs hold the same messages, and Korean translates every one."""
    def catalog(lang):
        with (i18n.LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po").open("rb") as po:
            return read_po(po, locale=lang)

    ours, other = catalog(language), catalog("en" if language == "ko" else "ko")
    assert {m.id for m in ours if m.id} == {m.id for m in other if m.id}
    if language == "ko":
        assert [m.id for m in ours if m.id and not m.string] == []
