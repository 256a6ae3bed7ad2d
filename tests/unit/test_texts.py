"""What the services say to people (contracts/texts.py), carried as a message and its values and
shown in the reader's language: a held step's reason, a schedule note, a CSV row's error. The
JSON API keeps the English it always had."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from contracts.commands import ContactFields
from contracts.events import EnrollmentNeedsAttention, StepScheduled
from contracts.texts import Text, missing_variable, said, validation_text
from contracts.views import EnrollmentView
from services.enrollment.contact_import import parse
from services.mailer.domain import MissingMergeValue
from services.scheduler.handlers import RETRIED
from services.gateway.web.routes.timeline import attention
from services.gateway.web.templating import Texts

ENGLISH, KOREAN = Texts("en", "UTC"), Texts("ko", "UTC")
HELD = said("step %(step)s not sent: %(why)s", step=2, why=MissingMergeValue("직함").text)


def test_a_text_is_its_english_and_translates_with_its_values_nested():
    assert HELD.english() == "step 2 not sent: {{직함}} has no value for this contact and no fallback"
    assert KOREAN.say(HELD) == "2단계 미발송: 이 고객의 {{직함}} 값이 없고 대체값도 없습니다"
    assert missing_variable(HELD) == "{{직함}}"
    assert missing_variable(said("daily cap of %(cap)s reached for %(address)s", cap=5,
                                 address="a@b.example")) is None


def test_a_text_survives_the_json_of_an_event():
    event = EnrollmentNeedsAttention.model_validate_json(EnrollmentNeedsAttention(
        enrollment_id="00000000-0000-4000-8000-000000000001", step_id=
        "00000000-0000-4000-8000-000000000002", reason=HELD.english(),
        reason_text=HELD).model_dump_json())
    assert event.reason_text == HELD and isinstance(event.reason_text.values["why"], Text)
    assert event.reason_text.values["step"] == 2  # (not turned into "2")


def test_events_written_before_texts_read_without_one_and_show_their_english():
    old = StepScheduled.model_validate({"enrollment_id": "00000000-0000-4000-8000-000000000001",
                                        "step_id": "00000000-0000-4000-8000-000000000002",
                                        "step_index": 0, "due_at": "2026-03-02T00:30:00Z",
                                        "reason": "retried"})
    assert old.reason_text is None
    assert KOREAN.say(old.reason_text, old.reason) == "retried"
    assert KOREAN.say(RETRIED, "retried") == "보류 후 다시 시도함"


def test_a_message_the_catalog_lacks_stays_as_written_and_an_empty_one_is_empty():
    reply = Text(message="451 4.7.1 try again later (100% full)")
    assert KOREAN.say(reply) == "451 4.7.1 try again later (100% full)"
    assert KOREAN.say(Text(message="")) == ""
    assert KOREAN.say(None, None) == ""


def test_what_a_text_says_is_plain_text_for_the_template_to_escape():
    text = said("%(seconds)s s between sends from %(address)s", seconds="60",
                address="<b>x</b>@y.example")
    shown = KOREAN.say(text)
    assert type(shown) is str and "<b>x</b>@y.example" in shown  # escaped by the template


def _view(**fields) -> EnrollmentView:
    base = {"enrollment_id": "00000000-0000-4000-8000-000000000001",
            "sequence_id": "00000000-0000-4000-8000-000000000002",
            "contact_id": "00000000-0000-4000-8000-000000000003", "contact_name": "김민수",
            "contact_email": "kim@x.example", "status": "needs_attention", "current_step": 1,
            "sends": 1, "opens": 0, "unique_opens": 0, "enrolled_at": "2026-03-02T00:00:00Z",
            "last_activity_at": "2026-03-02T00:00:00Z", "next_due_at": None, "held": False,
            "schedule_note": None, "ended_reason": None}
    return EnrollmentView.model_validate({**base, **fields})


def test_the_timeline_says_why_a_step_is_held_in_korean_from_the_text():
    failed = said("step %(step)s not sent: %(why)s", step=1, why=said(
        "SMTP %(code)s after %(attempts)s attempts: %(reply)s", code="451", attempts=5,
        reply="4.7.1 greylisted"))
    shown = attention(_view(attention=failed.english(), attention_text=failed), KOREAN)
    assert shown == "1단계 미발송: 5번 시도 후 SMTP 451: 4.7.1 greylisted"
    missing = attention(_view(attention=HELD.english(), attention_text=HELD), KOREAN)
    assert "{{직함}}" in missing and "연락처" in missing  # the page's own words for it
    # an event of before: the English, as it was
    assert attention(_view(attention="step 1 not sent: boom", attention_text=None),
                     KOREAN) == "step 1 not sent: boom"


@pytest.mark.parametrize("row, english, korean", [
    ("kim,not-an-email", "value is not a valid email address", "이메일 주소를 입력하세요"),
    ("kim", "1 values for 2 columns", "열은 2개인데 값이 1개입니다."),
    ("again,KIM@x.example", "same email as line 2", "2행과 이메일이 같습니다."),
])
def test_an_import_row_error_keeps_its_english_and_carries_a_text(row, english, korean):
    parsed = parse("고객명,이메일\nkim,kim@x.example\n" + row + "\n")
    list(parsed.chunks())
    [failed] = parsed.failed
    assert english in failed.message  # the API's words, as before
    assert korean in KOREAN.say(failed.text), KOREAN.say(failed.text)


def test_a_validation_error_of_a_known_type_is_a_message_of_the_catalog():
    with pytest.raises(ValidationError) as refused:
        ContactFields.model_validate({"email": "a@b.example", "name": "x" * 300})
    text = validation_text(refused.value.errors()[0])
    assert text.message == "At most %(max_length)s." and text.values["max_length"] == "200"
    assert KOREAN.say(text) == "200개 이하여야 합니다."
