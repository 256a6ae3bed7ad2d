"""Merge variables, threading and message format (services/mailer/domain.py)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest

from services.mailer.domain import (
    Links,
    MissingMergeValue,
    OutgoingEmail,
    PreviousEmail,
    build_message,
    html_body_for,
    message_id_for,
    render,
    text_body_for,
    thread_for,
)

VALUES = {"name": "김민수", "company": "<Acme & Co>", "job_title": "", "owner_name": "이영희"}


def test_korean_and_english_variables_render_the_same_fields():
    assert render("{{고객명}}님 / {{customer_name}} @ {{회사명}}", VALUES) == "김민수님 / 김민수 @ <Acme & Co>"


def test_a_fallback_fills_an_empty_value():
    assert render("{{직함|담당자}}님", VALUES) == "담당자님"


def test_an_empty_value_without_fallback_is_refused_not_sent_as_a_gap():
    with pytest.raises(MissingMergeValue) as error:
        render("Hi {{job_title}},", VALUES)
    assert error.value.variable == "job_title"


def test_the_html_part_escapes_merge_values():
    assert "&lt;Acme &amp; Co&gt;" in html_body_for("at {{company_name}}", VALUES, None)


def test_a_preview_keeps_missing_variables_visible_and_lists_them():
    missing = []
    assert render("Hi {{job_title}} {{고객명}}", VALUES, missing=missing) == "Hi {{job_title}} 김민수"
    assert missing == ["job_title"]


def test_every_email_carries_an_unsubscribe_link_and_an_open_pixel():
    from services.mailer.domain import Links, text_body_for

    links = Links(pixel_url="https://t.example/t/abc.gif", unsubscribe_url="https://t.example/u/x")
    assert text_body_for("Hi", VALUES, links).endswith("Unsubscribe: https://t.example/u/x\n")
    page = html_body_for("Hi", VALUES, links)
    assert 'src="https://t.example/t/abc.gif"' in page and 'href="https://t.example/u/x"' in page


LINKS = Links(pixel_url="https://t.example/t/abc.gif", unsubscribe_url="https://t.example/u/x?a=1&b=2")


def test_a_korean_sequence_s_footer_is_korean_in_both_parts():
    text = text_body_for("안녕하세요", VALUES, LINKS, language="ko")
    assert text.endswith("\n--\n더 이상 이 메일을 받지 않으시려면 수신 거부: "
                         "https://t.example/u/x?a=1&b=2\n")
    page = html_body_for("안녕하세요", VALUES, LINKS, language="ko")
    assert ('더 이상 이 메일을 받지 않으시려면 <a href="https://t.example/u/x?a=1&amp;b=2">'
            "수신 거부</a>") in page
    assert "Unsubscribe" not in text + page


def test_an_english_sequence_s_footer_is_english_and_english_is_the_default():
    for language in ({"language": "en"}, {}):
        text = text_body_for("Hi", VALUES, LINKS, **language)
        assert text.endswith("No longer want these emails? Unsubscribe: https://t.example/u/x?a=1&b=2\n")
        page = html_body_for("Hi", VALUES, LINKS, **language)
        assert ('No longer want these emails? <a href="https://t.example/u/x?a=1&amp;b=2">'
                "Unsubscribe</a>") in page
        assert "수신" not in text + page


def test_a_language_without_a_catalog_gets_the_english_footer():
    assert text_body_for("Hi", VALUES, LINKS, language="fr") == text_body_for("Hi", VALUES, LINKS)


def test_previews_and_test_emails_have_no_footer_in_any_language():
    for language in ("ko", "en"):
        assert "수신" not in html_body_for("Hi", VALUES, None, language=language)
        assert text_body_for("Hi", VALUES, None, language=language) == "Hi"


def test_a_step_without_subject_continues_the_previous_thread():
    first = thread_for("Quote for {{x}}", None)
    assert (first.subject, first.in_reply_to, first.references) == ("Quote for {{x}}", None, ())
    second = thread_for(None, PreviousEmail("<1@a.com>", "Quote", ()))
    third = thread_for(None, PreviousEmail("<2@a.com>", "Quote", ("<1@a.com>",)))
    assert (second.subject, second.in_reply_to, second.references) == ("Re: Quote", "<1@a.com>", ("<1@a.com>",))
    assert third.references == ("<1@a.com>", "<2@a.com>")


def test_message_ids_are_stable_per_step_and_on_the_sender_domain():
    enrollment, one, two = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert message_id_for(enrollment, one, "rep@sales.example") == message_id_for(enrollment, one, "x@sales.example")
    assert message_id_for(enrollment, one, "rep@sales.example").endswith("@sales.example>")
    assert message_id_for(enrollment, one, "a@b.c") != message_id_for(enrollment, two, "a@b.c")


def test_the_message_is_multipart_alternative_with_threading_headers():
    email = OutgoingEmail(
        sender_name="김 영업", sender_email="rep@sales.example", recipient="kim@example.com",
        thread=thread_for(None, PreviousEmail("<1@sales.example>", "견적", ())),
        text_body="안녕하세요", html_body="<p>안녕하세요</p>", message_id="<2@sales.example>",
        date=datetime(2026, 11, 26, 9, 30, tzinfo=UTC),
    )
    built = build_message(email)
    assert (built.sender, built.recipient) == ("rep@sales.example", "kim@example.com")
    message = message_from_bytes(built.payload, policy=policy.default)
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["Subject"] == "Re: 견적"
    assert message["In-Reply-To"] == "<1@sales.example>"
    assert message["References"] == "<1@sales.example>"
    assert message["From"].addresses[0].display_name == "김 영업"


@pytest.mark.parametrize("subject, body, unsubscribe", [
    ("견적 드립니다", "안녕하세요\n\n" * 40, "https://app.example/u/" + "x" * 120),
    ("Quote for Acme", "plain ascii", None),
    ("a" * 120 + " long English subject", "", "https://app.example/u/" + "y" * 990),
])
def test_the_message_is_byte_for_byte_what_the_email_packages_own_classes_write(
        subject, body, unsubscribe, monkeypatch):
    """build_message's shortcuts (ASCII headers written as they are, text parts set up
    directly) change no byte of what compat32 and MIMEText write."""
    from email.mime.text import MIMEText
    from email.policy import compat32

    from services.mailer import domain

    email = OutgoingEmail(
        sender_name="김 영업", sender_email="rep@sales.example", recipient="kim@example.com",
        thread=thread_for(subject, None), text_body=body, html_body=f"<p>{body}</p>",
        message_id="<2@sales.example>", date=datetime(2026, 11, 26, 9, 30, tzinfo=UTC),
        unsubscribe_url=unsubscribe)
    monkeypatch.setattr(domain.uuid, "uuid4", lambda: uuid.UUID(int=7))  # the same boundary
    built = build_message(email)
    monkeypatch.setattr(domain, "_UNFOLDED", compat32.clone(max_line_length=998))
    monkeypatch.setattr(domain, "_text_part", lambda text, subtype: MIMEText(text, subtype,
                                                                             "utf-8"))
    assert built.payload == build_message(email).payload


def test_header_injection_is_refused_when_building():
    email = OutgoingEmail(
        sender_name="x", sender_email="rep@sales.example", recipient="kim@example.com",
        thread=thread_for("Hi\r\nBcc: all@example.com", None), text_body="b", html_body="b",
        message_id="<1@sales.example>", date=datetime(2026, 11, 26, tzinfo=UTC),
    )
    with pytest.raises(ValueError):
        build_message(email)


@pytest.mark.parametrize("field", ["sender_name", "recipient"])
def test_header_injection_in_any_header_value_is_refused(field):
    email = OutgoingEmail(
        sender_name="x", sender_email="rep@sales.example", recipient="kim@example.com",
        thread=thread_for("Hi", None), text_body="b", html_body="b",
        message_id="<1@sales.example>", date=datetime(2026, 11, 26, tzinfo=UTC),
    )
    with pytest.raises(ValueError, match="header injection"):
        build_message(dataclasses.replace(email, **{field: "a@b.co\r\nBcc: all@example.com"}))
