"""The mail corpus (tests/fixtures/mail, its manifest in corpus/manifest.json; corpus/build.py
writes it): bounces, auto-replies and replies of many MTAs, providers and clients, each with its
expected kind and, for a bounce, its reason. What the classifier must hold over all of them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from sequences.bounce_reasons import REASON_CLASS
from services.thread_watcher.domain import examine_raw, message_kind

MAIL = Path(__file__).resolve().parents[1] / "fixtures" / "mail"
MANIFEST = json.loads((MAIL / "corpus" / "manifest.json").read_text(encoding="utf-8"))


def _verdicts():
    for name, expected in sorted(MANIFEST.items()):
        examined = examine_raw((MAIL / name).read_bytes())
        yield name, expected, message_kind(examined), examined.bounce


VERDICTS = list(_verdicts())


def test_the_corpus_is_large_and_varied_and_the_manifest_names_every_file():
    files = {str(p.relative_to(MAIL)) for p in MAIL.rglob("*.eml")}
    assert files == set(MANIFEST)
    assert len(MANIFEST) >= 150
    assert len({e["source"].split(" (")[0] for e in MANIFEST.values()}) >= 40
    for entry in MANIFEST.values():
        assert entry["kind"] in ("bounce", "auto-reply", "reply", "other")
        if entry["kind"] == "bounce":
            assert entry["reason"] in REASON_CLASS
        if entry["kind"] in ("reply", "auto-reply"):  # for the reply-rules tests
            assert entry["intent"] in ("interested", "not-now", "not-interested", "referral",
                                       "unsubscribe", "other")
            assert "return_date" in entry


def test_kinds_and_reason_classes_are_right_and_no_other_mail_is_a_bounce(capsys):
    wrong_kind = [(n, e["kind"], k) for n, e, k, _ in VERDICTS if k != e["kind"]]
    false_bounces = [n for n, e, k, _ in VERDICTS if k == "bounce" and e["kind"] != "bounce"]
    bounces = [(n, e, b) for n, e, _, b in VERDICTS if e["kind"] == "bounce"]
    right_class = [n for n, e, b in bounces
                   if b is not None and b.verdict.bounce_class == REASON_CLASS[e["reason"]]]
    by_class = Counter(b.verdict.bounce_class if b else "(missed)" for _, _, b in bounces)
    by_reason = Counter(b.verdict.reason if b else "(missed)" for _, _, b in bounces)
    with capsys.disabled():
        print(f"\nmail corpus: {len(VERDICTS)} messages, kind right "
              f"{len(VERDICTS) - len(wrong_kind)}, bounces {len(bounces)}, reason class right "
              f"{len(right_class)}")
        for name, count in sorted(by_class.items()):
            print(f"  {name:<22} {count}")
        print("  by reason: " + ", ".join(f"{r} {c}" for r, c in sorted(by_reason.items())))
    assert not false_bounces
    assert len(wrong_kind) <= 0.03 * len(VERDICTS), wrong_kind
    assert len(right_class) >= 0.90 * len(bounces), [
        (n, e["reason"], b and b.verdict.reason) for n, e, b in bounces if n not in right_class]


def test_only_a_bad_address_is_a_hard_bounce():
    for name, expected, _, bounce in VERDICTS:
        if bounce is not None:
            permanent = bounce.verdict.bounce_class == "recipient-permanent"
            assert (bounce.kind == "hard") == permanent, name


def test_bad_input_is_classified_and_says_what_was_missing():
    notes = {n.removeprefix("corpus/"): b.notes for n, _, _, b in VERDICTS
             if n.startswith("corpus/bad_")}
    assert "no-recipient" in notes["bad_no_recipient.eml"]
    assert "no-original-message-id" in notes["bad_no_original.eml"]
    assert "broken-mime" in notes["bad_broken_mime.eml"]
    assert "unknown-charset" in notes["bad_unknown_charset.eml"]
    unclassified = dict((n, b) for n, _, _, b in VERDICTS)["corpus/bad_unclassifiable.eml"]
    assert (unclassified.verdict.reason, unclassified.kind) == ("unclassified", "soft")
