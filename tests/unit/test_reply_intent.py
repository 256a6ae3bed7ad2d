"""Reply intent (sequences/reply_intent.py): every rule of the table catches its example, the
order decides between rules that both match, and over the mail corpus's replies
(tests/fixtures/mail, manifest `intent`) the hit rate is printed and held."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from sequences.reply_intent import INTENTS, RULES, classify_intent
from services.thread_watcher.domain import classification, examine_raw, reply_intent
from services.thread_watcher.mail import own_text

MAIL = Path(__file__).resolve().parents[1] / "fixtures" / "mail"
MANIFEST = json.loads((MAIL / "corpus" / "manifest.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("rule", RULES, ids=[r.rule for r in RULES])
def test_every_rule_catches_its_example(rule):
    verdict = classify_intent(rule.example)
    assert (verdict.intent, verdict.rule) == (rule.intent, rule.rule)


def test_rule_ids_are_unique_and_name_their_intent():
    assert len({r.rule for r in RULES}) == len(RULES)
    for rule in RULES:
        assert rule.intent in INTENTS and rule.rule.startswith(rule.intent + ".")


@pytest.mark.parametrize(("text", "intent"), [
    ("Not interested. Please remove me from your list.", "unsubscribe"),
    ("관심 없습니다. 수신거부 합니다.", "unsubscribe"),
    ("I'm not the right person, and we're not interested anyway.", "referral"),
    ("관심 없습니다", "not_interested"),
    ("We're not interested right now.", "not_interested"),
    ("Not right now, maybe next quarter.", "not_now"),
    ("다음 분기에 연락 주세요", "not_now"),
    ("Sounds good, let's talk on Friday.", "interested"),
    ("ＵＮＳＵＢＳＣＲＩＢＥ", "unsubscribe"),  # full-width letters fold
    ("Does the quote include VAT?", "other"),
    ("", "other"),
])
def test_the_order_decides_between_rules_that_both_match(text, intent):
    assert classify_intent(text).intent == intent


def test_quoted_history_and_signature_are_not_read():
    text = ("Thanks, we'll look at it.\n\nBest regards,\nJohn\nSent from my iPhone\n\n"
            "On Mon, Nov 30, 2026 at 9:00 AM Jane <jane@x.example> wrote:\n"
            "> Reply STOP to unsubscribe. Are you interested?\n")
    assert own_text(text) == "Thanks, we'll look at it."
    assert classify_intent(own_text(text)).intent == "other"
    korean = ("수신거부\n\n2026년 11월 25일 (수) 오전 9:30, 이영희 <y@sales.example>님이 작성:\n"
              "> 관심 있으시면 회신 주세요\n")
    assert own_text(korean) == "수신거부"
    assert own_text("네 좋습니다\n\niPhone에서 보냄") == "네 좋습니다"


def test_the_corpus_replies_hit_rate(capsys):
    replies = {name: e for name, e in MANIFEST.items() if e["kind"] == "reply"}
    verdicts = {name: reply_intent(examine_raw((MAIL / name).read_bytes()).mail)
                for name in replies}
    wrong = {name: (e["intent"], verdicts[name].intent) for name, e in replies.items()
             if verdicts[name].intent != e["intent"].replace("-", "_")}
    by_intent = Counter(v.intent for v in verdicts.values())
    with capsys.disabled():
        print(f"\nreply intent: {len(replies) - len(wrong)} of {len(replies)} corpus replies right"
              f" ({100 * (len(replies) - len(wrong)) / len(replies):.0f}%); "
              + ", ".join(f"{k} {v}" for k, v in sorted(by_intent.items())))
        for name, (expected, got) in sorted(wrong.items()):
            print(f"  missed {name}: expected {expected}, got {got}")
    assert len(wrong) <= 0.1 * len(replies), wrong
    # an opt-out taken by mistake is the costly error: no reply is wrongly read as one
    assert not [n for n, (e, g) in wrong.items() if g == "unsubscribe"]


def test_classify_says_the_intent_of_a_reply_and_of_nothing_else():
    facts = classification(examine_raw((MAIL / "corpus/reply_ko_unsubscribe.eml").read_bytes()))
    assert (facts["kind"], facts["intent"], facts["intent_rule"]) == (
        "reply", "unsubscribe", "unsubscribe.ko")
    facts = classification(examine_raw((MAIL / "corpus/ooo_ko_naver.eml").read_bytes()))
    assert "intent" not in facts
