"""What each bounce class does, the bounce-rate guard, the mailbox pause threshold, the
suppression list's values and CSV, and the mailer's stop-gap reading of SMTP replies: pure
logic, no I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from contracts.events import AddressSuppressed, SequencePaused, SuppressionRemoved
from contracts.values import suppressed_by, suppression_id_for, suppression_target
from services.enrollment import domain, suppression_csv
from services.enrollment.contact_import import ImportFileError
from services.enrollment.domain import Admission, BounceAction, admission, bounce_action
from services.gateway.web.templating import Texts
from sequences.bounce_reasons import classify
from services.mailer.domain import should_pause_mailbox

NOW = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize("bounce_class, kind, action", [
    ("recipient-permanent", "hard", BounceAction.bounce),
    ("recipient-temporary", "soft", BounceAction.soft),
    ("sender-side", "soft", BounceAction.hold_sender),
    ("content-side", "soft", BounceAction.hold_content),
    # events from before the classes: their kind decides, as it did then
    ("unknown", "hard", BounceAction.bounce),
    ("unknown", "soft", BounceAction.soft),
])
def test_each_bounce_class_has_its_action(bounce_class, kind, action):
    assert bounce_action(bounce_class, kind) is action


def test_only_temporary_recipient_bounces_count_against_the_soft_limit():
    assert domain.counts_as_soft({"kind": "soft", "bounce_class": "recipient-temporary"})
    assert domain.counts_as_soft({"kind": "soft"})  # an old event
    assert not domain.counts_as_soft({"kind": "soft", "bounce_class": "sender-side"})
    assert not domain.counts_as_soft({"kind": "soft", "bounce_class": "content-side"})
    assert not domain.counts_as_soft({"kind": "hard", "bounce_class": "recipient-permanent"})


def test_a_suppressed_address_is_excluded_but_earlier_answers_keep_their_precedence():
    assert admission(False, "a@x.co", None, None, False, suppressed=True) \
        is Admission.excluded_suppressed
    assert admission(True, "a@x.co", None, None, False, suppressed=True) \
        is Admission.excluded_opted_out
    assert admission(False, "a@x.co", "active", "a@x.co", False, suppressed=True) \
        is Admission.skipped_active
    assert admission(False, "a@x.co", "bounced", "a@x.co", True, suppressed=True) \
        is Admission.refused_bounced
    assert admission(False, "b@x.co", "bounced", "a@x.co", True, suppressed=True) \
        is Admission.excluded_suppressed
    assert admission(False, "b@x.co", "bounced", "a@x.co", True) is Admission.enroll


def _sequence(state="live"):
    return domain.Sequence(uuid.uuid4(), state, (), 3)


@pytest.mark.parametrize("bounced, deliveries, pauses", [
    (2, 20, True),  # 10% of 20
    (1, 20, False),  # 5% is not more than 5%
    (5, 19, False),  # too few deliveries to judge
    (0, 0, False),
    (21, 400, True),
])
def test_the_bounce_rate_guard(bounced, deliveries, pauses):
    events = domain.guard_bounce_rate(_sequence(), NOW, bounced, deliveries, 0.05, 20)
    assert bool(events) is pauses
    if pauses:
        [paused] = events
        assert isinstance(paused, SequencePaused)
        assert paused.reason.startswith("paused by the bounce-rate guard")
        assert f"{bounced} of {deliveries}" in paused.reason


def test_the_guard_leaves_a_paused_or_archived_sequence_alone():
    for state in ("paused", "archived"):
        assert domain.guard_bounce_rate(_sequence(state), NOW, 10, 20, 0.05, 20) == []


def test_the_guards_reason_reads_in_korean():
    [paused] = domain.guard_bounce_rate(_sequence(), NOW, 3, 20, 0.05, 20)
    said = Texts("ko", "UTC").said(paused.reason)
    assert said.startswith("반송률 보호로 일시 중지됨") and "15.0%" in said and "20건" in said
    assert Texts("ko", "UTC").said("something else") == "something else"


@pytest.mark.parametrize("action, korean", [
    (BounceAction.hold_sender, "발신자 측 문제로 거부되었습니다"),
    (BounceAction.hold_content, "수신 서버가 스팸(또는 내용 문제)으로 거부했습니다"),
])
def test_why_a_bounce_holds_reads_in_korean(action, korean):
    reason = domain.bounce_hold_reason(action, "sender-auth", "550 5.7.26 DMARC (x)")
    said = Texts("ko", "UTC").said(reason)
    assert said.startswith(korean) and "550 5.7.26 DMARC (x)" in said
    held = "step 2 not sent: kim@customer.example (or its domain) is on the suppression list"
    assert Texts("ko", "UTC").said(held).startswith("kim@customer.example(또는 그 도메인)이 수신")
    deferred = ("the sender mailbox rep@sales.example is paused until someone resumes it:"
                " 3 sender-side rejections")
    assert Texts("ko", "UTC").said(deferred).startswith("발신 메일함 rep@sales.example")


@pytest.mark.parametrize("pause_after, rejections, paused, pauses", [
    (3, 2, False, False), (3, 3, False, True), (3, 5, True, False), (1, 1, False, True)])
def test_a_mailbox_pauses_at_the_threshold_once(pause_after, rejections, paused, pauses):
    assert should_pause_mailbox(rejections, pause_after, paused) is pauses


# what the mailer acts on at send time: the one bounce table (sequences/bounce_reasons.py)
@pytest.mark.parametrize("reply, bounce_class, reason", [
    ("5.7.26 This message does not pass DMARC", "sender-side", "sender-auth"),
    ("5.7.1 SPF check failed", "sender-side", "sender-auth"),
    ("5.7.1 Client host blocked using Spamhaus", "sender-side", "sender-blocked"),
    ("5.7.1 Message rejected as spam", "content-side", "spam-content"),
    ("5.7.1 Relaying denied", "sender-side", "relay-denied"),
    ("5.7.0 Policy rejection", "sender-side", "sender-policy"),
    ("5.1.2 Host unknown", "recipient-permanent", "host-unknown"),
    ("5.1.6 Mailbox has moved", "recipient-permanent", "moved"),
    ("5.1.1 <a@b.example>: User unknown", "recipient-permanent", "user-unknown"),
    ("5.2.2 Mailbox full", "recipient-temporary", "mailbox-full"),
    ("5.2.1 Mailbox disabled", "recipient-temporary", "mailbox-suspended"),
    ("5.3.4 Message too big", "content-side", "message-too-big"),
    ("5.6.0 Bad content", "content-side", "content-rejected"),
])
def test_smtp_replies_are_read_by_their_enhanced_code_and_words(reply, bounce_class, reason):
    verdict = classify("550", f"550 {reply}")
    assert (verdict.bounce_class, verdict.reason) == (bounce_class, reason)
    assert verdict.kind == ("hard" if bounce_class == "recipient-permanent" else "soft")


@pytest.mark.parametrize("value, found", [
    ("Kim@Customer.Example", ("address", "kim@customer.example")),
    ("customer.example", ("domain", "customer.example")),
    ("@Customer.Example.", ("domain", "customer.example")),
    ("sub.mail.co.kr", ("domain", "sub.mail.co.kr")),
])
def test_suppression_values_are_addresses_or_domains_lowercased(value, found):
    assert suppression_target(value) == found


@pytest.mark.parametrize("value", ["not a domain", "localhost", "a@b", "-bad-.example", ""])
def test_other_suppression_values_are_refused(value):
    with pytest.raises(ValueError):
        suppression_target(value)


def test_an_email_is_suppressed_by_its_address_and_its_domain():
    assert suppressed_by("Kim@Customer.example") == ("kim@customer.example", "customer.example")
    workspace = uuid.uuid4()
    assert suppression_id_for(workspace, "x.example") == suppression_id_for(workspace, "x.example")
    assert suppression_id_for(workspace, "x.example") != suppression_id_for(uuid.uuid4(),
                                                                            "x.example")


def test_adding_and_removing_a_suppression():
    sid = uuid.uuid4()
    added = AddressSuppressed(suppression_id=sid, value="x.example", kind="domain",
                              reason="manual", added_at=NOW)
    removed = SuppressionRemoved(suppression_id=sid, value="x.example", removed_at=NOW)
    assert domain.suppress(False, added) == [added]
    assert domain.suppress(domain.suppression_active([added]), added) == []  # already on it
    assert not domain.suppression_active([added, removed])
    assert domain.suppress(domain.suppression_active([added, removed]), added) == [added]
    with pytest.raises(domain.Refused):
        domain.unsuppress(domain.suppression_active([added, removed]), removed)


def test_a_suppression_csv_with_a_header_and_a_bad_line():
    data = "이메일,메모\nkim@customer.example,전화로 요청\ncustomer2.example,\nnope,\n\n"
    entries, failed = suppression_csv.parse(data.encode("cp949"))
    assert [(e.value, e.note) for e in entries] == [("kim@customer.example", "전화로 요청"),
                                                    ("customer2.example", "")]
    assert [(f.row, f.field) for f in failed] == [(4, "value")]


def test_a_suppression_csv_of_bare_values_and_an_empty_one():
    entries, failed = suppression_csv.parse(b"kim@customer.example\nother.example\n")
    assert [e.value for e in entries] == ["kim@customer.example", "other.example"] and not failed
    with pytest.raises(ImportFileError):
        suppression_csv.parse(b"")
