"""Pieces of the web app that need no running system: the session cookie's flags, and the
timeline's sentences (each event type in words of both languages, escaped, falling back to the
service's summary)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from fastapi.responses import Response

from contracts.views import TimelineEntry
from services.gateway.web.routes.timeline import sentence
from services.gateway.web.session import SESSION_COOKIE, set_session_cookie
from services.gateway.web.templating import Texts


def _request(public_url: str):
    return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(public_url=public_url)))


@pytest.mark.parametrize("public_url, secure", [("https://app.example/", True),
                                                ("http://127.0.0.1:8000/", False)])
def test_the_session_cookie_is_httponly_lax_and_secure_only_over_https(public_url, secure):
    response = Response()
    set_session_cookie(response, _request(public_url), "token")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=token;")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert ("Secure" in cookie) is secure


def _entry(type_: str, data: dict, summary: str = "the summary") -> TimelineEntry:
    return TimelineEntry(position=1, event_id=uuid.uuid4(), type=type_, stream_id="s",
                         occurred_at=datetime(2026, 3, 2, 0, 30, tzinfo=timezone.utc),
                         correlation_id=uuid.uuid4(), causation_id=None, summary=summary,
                         data=data)


ENGLISH = Texts("en", "Asia/Seoul")
KOREAN = Texts("ko", "Asia/Seoul")
HELD = {"step_index": 1, "reason": "{{회사명}} has no value for this contact and no fallback"}


@pytest.mark.parametrize("type_, data, english, korean", [
    ("EmailSent", {"step_index": 1, "recipient": "kim@customer.example", "subject": "Re: 견적 건",
                   "message_id": "<m@x>"},
     "Email step 2 sent to kim@customer.example (Re: 견적 건)",
     "이메일 2단계를 kim@customer.example에게 보냄 (Re: 견적 건)"),
    ("EmailHeld", HELD, "Held: {{회사명}} is empty for this contact",
     "보류: 이 연락처의 {{회사명}} 값이 비어 있습니다"),
    ("EnrollmentNeedsAttention",
     {"reason": "step 2 not sent: {{회사명}} has no value for this contact and no fallback"},
     "Needs attention: {{회사명}} is empty for this contact", "확인 필요: 이 연락처의 {{회사명}}"),
    ("EnrollmentReplied", {"reply_message_id": "<r@x>"}, "Replied — the enrollment stopped",
     "답장함 — 등록이 멈췄습니다"),
    ("AutoReplyDetected", {"sender": "kim@customer.example", "reason": "Auto-Submitted"},
     "Out-of-office reply from kim@customer.example: not counted as a reply",
     "kim@customer.example의 부재중 자동 응답: 답장으로 치지 않음"),
    ("StepScheduled", {"step_index": 0, "due_at": "2026-03-02T00:30:00+00:00"},
     "Step 1 planned for Mar 2, 2026, 9:30:00\u202fAM", "1단계 예정: 2026. 3. 2."),
    ("StepDue", {"step_index": 2, "channel": "call"}, "Step 3 due: a call task",
     "3단계 시작: 담당자의 전화 업무"),
    ("EnrollmentStopped", {}, "Stopped by hand", "직접 중지함"),
    ("ContactEnrolled", {"email": "kim@customer.example", "contact_timezone": "Asia/Tokyo"},
     "Enrolled (kim@customer.example); their timezone: Asia/Tokyo",
     "등록됨 (kim@customer.example), 고객 시간대: Asia/Tokyo"),
    ("ContactEnrolled", {"email": "kim@customer.example", "attempt": 2},
     "Enrolled again (attempt 2, kim@customer.example)", "다시 등록됨 (2번째"),
    ("BounceDetected", {"kind": "soft", "recipient": "kim@customer.example", "status": "550",
                        "bounce_class": "sender-side", "reason": "sender-auth", "rule": "dmarc"},
     "Bounce of kim@customer.example (550): the sender failed authentication (SPF, DKIM or"
     " DMARC); refused because of the sender, not the address",
     "kim@customer.example 반송 (550): 발신자 인증 실패 (SPF, DKIM 또는 DMARC). 주소가 아니라"
     " 발신 측 문제로 거부됨"),
    ("BounceDetected", {"kind": "hard", "recipient": "kim@customer.example", "status": "5.1.1",
                        "bounce_class": "recipient-permanent", "reason": "user-unknown"},
     "Hard bounce of kim@customer.example (5.1.1): the address does not exist",
     "kim@customer.example 영구 반송 (5.1.1): 존재하지 않는 주소"),
    ("BounceDetected", {"kind": "hard", "recipient": "kim@customer.example", "status": "550"},
     "Hard bounce of kim@customer.example (550): the address takes no mail",  # before classes
     "kim@customer.example 영구 반송 (550): 메일을 받지 않는 주소입니다"),
    ("TaskDue", {"step_index": 1, "channel": "call", "owner_name": "최유진"},
     "A call task for 최유진", "최유진 님의 전화 업무"),
    ("TaskCompleted", {"outcome": "done", "note": "통화함:\n다음 주 미팅"},
     "Task done: “통화함: 다음 주 미팅”", "업무 완료: “통화함: 다음 주 미팅”"),
    ("TaskCompleted", {"outcome": "skipped", "note": None}, "Task skipped", "업무 건너뜀"),
    ("VariantAssigned", {"letter": "B", "sequence_id": str(uuid.uuid4())},
     "A/B variant B assigned", "A/B 버전 B 배정됨"),
    ("VariantWinnerChosen", {"letter": "A", "by": "hand", "chosen_by": "younghee@sales.example"},
     "A/B winner: variant A, chosen by younghee@sales.example; new emails use it",
     "A/B 우승 버전: A (younghee@sales.example 님이 선정)"),
    ("VariantWinnerChosen", {"letter": "C", "by": "hand", "chosen_by": ""},
     "A/B winner: variant C, chosen by hand", "A/B 우승 버전: C (직접 선정)"),
    ("VariantWinnerChosen", {"letter": "B", "by": "automatic"},
     "A/B winner: variant B, chosen automatically (its reply rate was significantly better)",
     "A/B 우승 버전: B (회신율이 유의미하게 높아 자동 선정)"),
])
def test_timeline_entries_read_as_sentences_in_both_languages(type_, data, english, korean):
    assert english in sentence(_entry(type_, data), ENGLISH)
    assert korean in sentence(_entry(type_, data), KOREAN)


def test_a_timeline_sentence_escapes_what_it_quotes():
    words = sentence(_entry("EmailSent", {"step_index": 0, "recipient": "a@b.example",
                                          "subject": "<script>alert(1)</script>"}), ENGLISH)
    assert "<script>" not in words and "&lt;script&gt;" in words


@pytest.mark.parametrize("type_, data", [("SomethingNew", {"x": 1}), ("EmailSent", {})])
def test_an_unknown_type_or_shape_falls_back_to_the_summary_escaped(type_, data):
    words = sentence(_entry(type_, data, summary="new <thing>"), KOREAN)
    assert words == "new &lt;thing&gt;"
