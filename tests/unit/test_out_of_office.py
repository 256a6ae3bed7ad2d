"""Out-of-office answers (sequences/out_of_office.py and the enrollment's pause): the return date
of every auto-reply of the mail corpus (manifest `return_date`), printed and held, and until
when the next step waits."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sequences.out_of_office import return_date
from services.enrollment import domain
from services.thread_watcher.domain import back_on, classification, examine_raw

MAIL = Path(__file__).resolve().parents[1] / "fixtures" / "mail"
MANIFEST = json.loads((MAIL / "corpus" / "manifest.json").read_text(encoding="utf-8"))
SENT = datetime(2026, 11, 25, 9, 30, tzinfo=ZoneInfo("Asia/Seoul"))  # a Wednesday


def test_the_corpus_auto_replies_return_dates(capsys):
    answers = {n: e for n, e in MANIFEST.items() if e["kind"] == "auto-reply"}
    found = {n: back_on(examine_raw((MAIL / n).read_bytes()).mail) for n in answers}
    wrong = {n: (e["return_date"], found[n].on and found[n].on.isoformat())
             for n, e in answers.items()
             if (found[n].on.isoformat() if found[n].on else None) != e["return_date"]}
    languages = sorted({found[n].language for n in answers})
    with capsys.disabled():
        print(f"\nout of office: {len(answers) - len(wrong)} of {len(answers)} auto-replies with"
              f" the right return date (or rightly none); languages seen {', '.join(languages)}")
        for name, (expected, got) in sorted(wrong.items()):
            print(f"  missed {name}: expected {expected}, got {got}")
    assert len(wrong) <= 0.1 * len(answers), wrong
    assert {"en", "ko", "ja", "de", "fr", "es", "pt", "zh"} <= set(languages)


def test_relative_far_impossible_and_missing_dates():
    assert return_date("Out of office: back on Monday.", SENT).on == date(2026, 11, 30)
    assert return_date("12월 8일까지 부재중입니다.", SENT).on == date(2026, 12, 8)
    assert return_date("교육 참석으로 다음 주 월요일에 복귀합니다.", SENT).on == date(2026, 11, 30)
    far = return_date("On sabbatical until June 1, 2027.", SENT)
    assert far.on is None and "90 days" in far.note
    assert return_date("I am away until February 30, 2026.", SENT).on is None
    assert return_date("Ich bin bis 07.12.2026 nicht im Büro.", SENT).on == date(2026, 12, 7)
    assert return_date("I am out of the office.", SENT).on is None
    assert return_date("back on Monday", None).on is None  # no Date header: nothing to read against


def test_the_pause_lasts_until_the_day_after_the_return_date_or_seven_days():
    until, why = domain.out_of_office_until(SENT, date(2026, 12, 8), "Asia/Seoul", 1)
    assert until == datetime(2026, 12, 9, tzinfo=ZoneInfo("Asia/Seoul")) and "12-08" in why
    assert domain.out_of_office_until(SENT, date(2026, 12, 8), "Asia/Seoul", 0)[0].day == 8
    until, why = domain.out_of_office_until(SENT, None, "Asia/Seoul", 1)
    assert until == SENT + timedelta(days=7) and "7 days" in why


def test_classify_says_the_return_date_of_an_auto_reply():
    facts = classification(examine_raw((MAIL / "corpus/ooo_ko_naver.eml").read_bytes()))
    assert (facts["kind"], facts["return_date"]) == ("auto-reply", "2026-12-08")
    facts = classification(examine_raw((MAIL / "corpus/ooo_far_date.eml").read_bytes()))
    assert facts["return_date"] is None and "90 days" in facts["return_note"]


def test_a_later_pause_wins_and_only_a_paused_enrollment_resumes():
    import uuid

    import pytest

    from contracts.events import EnrollmentPaused
    from contracts.views import EnrollmentStatus
    state = domain.Enrollment(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), EnrollmentStatus.active,
                              (), 0, 1)
    with pytest.raises(domain.Refused):
        domain.resume_enrollment(state, SENT, "api")
    first = EnrollmentPaused(enrollment_id=state.enrollment_id, paused_at=SENT,
                             until=SENT + timedelta(days=3), reason="out-of-office")
    assert domain.pause_enrollment(state, first) == [first]
    state = domain.evolve(state, first)
    earlier = first.model_copy(update={"until": SENT + timedelta(days=1)})
    assert domain.pause_enrollment(state, earlier) == []
    [resumed] = domain.resume_enrollment(state, SENT.astimezone(UTC), "api")
    assert domain.evolve(state, resumed).paused_until is None
