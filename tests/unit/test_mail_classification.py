"""What the thread-watcher decides about real-world-shaped mail (services/thread-watcher):
replies from many clients, bounces of many MTAs, auto-replies in English and Korean, and input
that is broken in every way mail gets broken. The fixtures are in tests/fixtures/mail."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from contracts.events import AutoReplyDetected, BounceDetected, ReplyDetected
from sequences import cli
from services.thread_watcher.config import parse_mailboxes
from services.thread_watcher.devmail import auto_reply_to, bounce_of, reply_to
from services.thread_watcher.domain import (
    SentMessage,
    decide,
    events_for,
    examine_raw,
    normalize_subject,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mail"
SENT_AT = datetime(2026, 11, 25, 0, 30, tzinfo=UTC)


def ours(n: int) -> str:
    return f"<0b5c3d1e-7a2f-5c11-9e40-{n:012d}@sales.example>"


def enrollment(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


# What we sent, as the thread-watcher remembers it: (number, recipient, subject); the message
# number is also the enrollment's. 1 and 2 are the two steps of one enrollment.
_SENT = [
    (1, "kim@customer.example", "김민수님, 한빛상사 견적 건"),
    (2, "kim@customer.example", "Re: 김민수님, 한빛상사 견적 건"),
    (3, "john.doe@gmail.com", "Quote for Acme Corp"),
    (4, "jane.smith@contoso.com", "Following up on our meeting"),
    (5, "lee.jiwon@naver.com", "제안서 전달드립니다"),
    (6, "tim.cook.fan@icloud.com", "Your trial of Sequences"),
    (7, "tanaka@example.co.jp", "お見積りの件"),
    (8, "nobody@customer.example", "Quote for Customer Co"),
    (9, "ghost@example.net", "Quote"),
    (10, "olduser@example.org", "Quote"),
    (11, "noone@qmail.example", "Quote"),
    (12, "former.employee@contoso.com", "Quote"),
    (13, "bob@legacy.example", "Quote"),
    (14, "no.such.user@gmail.com", "Quote"),
    (15, "full.inbox@gmail.com", "Quote"),
    (16, "nobody@yahoo.com", "Quote"),
    (17, "unknown@ses-customer.example", "Quote"),
    (18, "wrong.address@naver.com", "제안서 전달드립니다"),
    (19, "full@customer.example", "Quote"),
    (20, "slow@customer.example", "Quote"),
    (21, "greylisted@example.net", "Quote"),
    (22, "quota@naver.com", "제안서"),
    (23, "pat.kim@yahoo.com", "Checking in"),
]
ENROLLMENT_OF = {1: 1, 2: 1}
SENT = [SentMessage(ours(n), enrollment(ENROLLMENT_OF.get(n, n)), to, subject,
                    SENT_AT + timedelta(minutes=n), open=True) for n, to, subject in _SENT]

# fixture -> (decision, number of our message it concerns or None, matched by)
EXPECTED = {
    "reply_gmail.eml": ("reply", 3, "headers"),
    "reply_outlook.eml": ("reply", 4, "headers"),
    "reply_apple_mail.eml": ("reply", 6, "headers"),
    "reply_naver.eml": ("reply", 5, "headers"),
    "reply_mobile_no_headers.eml": ("reply", 2, "subject"),  # the newest of the thread
    "reply_iphone_korean.eml": ("reply", 2, "headers"),
    "reply_euc_kr.eml": ("reply", 1, "headers"),
    "reply_iso2022jp.eml": ("reply", 7, "headers"),
    "reply_thunderbird_references_only.eml": ("reply", 3, "headers"),
    "reply_gateway_rewritten_ids.eml": ("reply", 5, "subject"),
    "reply_yahoo.eml": ("reply", 23, "headers"),
    "malformed_mime_reply.eml": ("reply", 3, "headers"),
    "broken_charset_reply.eml": ("reply", 1, "headers"),
    "auto_outlook_ooo.eml": ("auto-reply", 4, "headers"),
    "auto_gmail_vacation.eml": ("auto-reply", 3, "headers"),
    "auto_korean_subject_bujaejung.eml": ("auto-reply", 1, "headers"),
    "auto_naver_jadong_hoesin.eml": ("auto-reply", 5, "subject"),
    "auto_x_autoreply.eml": ("auto-reply", 6, "headers"),
    "auto_precedence_bulk_ticket.eml": ("auto-reply", 3, "headers"),
    "auto_read_receipt.eml": ("auto-reply", 4, "headers"),
    "auto_lotus_notes.eml": ("auto-reply", 23, "headers"),
    "bounce_postfix_user_unknown.eml": ("bounce hard", 8, "original Message-ID"),
    "bounce_exim.eml": ("bounce hard", 9, "original Message-ID"),
    "bounce_sendmail.eml": ("bounce hard", 10, "original Message-ID"),
    "bounce_qmail.eml": ("bounce hard", 11, "original Message-ID"),
    "bounce_office365.eml": ("bounce hard", 12, "original Message-ID"),
    "bounce_exchange_legacy.eml": ("bounce hard", 13, "failed recipient"),
    "bounce_gmail.eml": ("bounce hard", 14, "original Message-ID"),
    "bounce_gmail_mailbox_full.eml": ("bounce soft", 15, "original Message-ID"),
    "bounce_yahoo.eml": ("bounce hard", 16, "original Message-ID"),
    "bounce_amazon_ses.eml": ("bounce hard", 17, "original Message-ID"),
    "bounce_naver.eml": ("bounce hard", 18, "original Message-ID"),
    "bounce_soft_postfix_mailbox_full.eml": ("bounce soft", 19, "original Message-ID"),
    "bounce_soft_postfix_delayed.eml": ("bounce soft", 20, "original Message-ID"),
    "bounce_soft_exim_greylisted.eml": ("bounce soft", 21, "original Message-ID"),
    "bounce_soft_naver_mailbox_full.eml": ("bounce soft", 22, "original Message-ID"),
    "bounce_of_personal_mail.eml": ("bounce soft", None, None),  # spam content: not the address
    "dsn_delivered.eml": ("unrelated", None, None),
    "unrelated_new_inquiry.eml": ("unrelated", None, None),
    "unrelated_reply_to_personal_mail.eml": ("unrelated", None, None),
    "missing_headers.eml": ("unrelated", None, None),
    "garbled_headers.eml": ("unrelated", None, None),
}


def decision_for(name: str, sent=SENT):
    examined = examine_raw((FIXTURES / name).read_bytes())
    wanted = examined.wanted()
    # what the database lookup returns: the messages it names and those to its people
    found = [s for s in sent if s.message_id in wanted.message_ids
             or s.recipient in wanted.addresses]
    return decide(examined, found)


def test_every_fixture_has_an_expectation_and_there_are_over_thirty():
    assert sorted(p.name for p in FIXTURES.glob("*.eml")) == sorted(EXPECTED)
    assert len(EXPECTED) >= 30


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_message_is_classified_and_linked_to_its_enrollment(name):
    label, number, matched_by = EXPECTED[name]
    decision = decision_for(name)
    assert decision.label == label, decision.reasons
    assert (decision.sent.message_id if decision.sent else None) == (
        ours(number) if number else None), decision.reasons
    assert decision.matched_by == matched_by
    events = events_for(decision, datetime.now(UTC))
    assert len(events) == (1 if number else 0)
    for event in events:  # everything recorded can be stored (no NUL, no lone surrogates)
        json.dumps(event.model_dump(mode="json"), ensure_ascii=False).encode("utf-8")


def test_a_reply_records_the_text_written_without_the_quoted_original():
    [event] = events_for(decision_for("reply_gmail.eml"), datetime.now(UTC))
    assert isinstance(event, ReplyDetected)
    assert event.enrollment_id == enrollment(3)
    assert event.excerpt == ("Hi Younghee, Thanks for the quote. Could we get a call on Friday "
                             "to go over the volume discount? Best, John")
    assert (event.sender, event.message_id) == (
        "john.doe@gmail.com", "<CAFx9k2p8Qm1Zr4Wq7LJ0-bT5xv3Yq@mail.gmail.com>")
    assert event.received_at == datetime(2026, 11, 26, 2, 2, tzinfo=UTC)


@pytest.mark.parametrize("name, text", [
    ("reply_naver.eml", "안녕하세요, 이영희 매니저님. 보내주신 제안서 잘 받았습니다."),
    ("reply_euc_kr.eml", "김민수입니다. 견적서 감사합니다. 수량 500개 기준으로 다시 부탁드립니다."),
    ("reply_iso2022jp.eml", "田中です。 お見積りありがとうございます。"),
    ("reply_iphone_korean.eml", "네, 검토해 봤습니다. 오늘 오후에 전화 주세요. iPhone에서 보냄"),
    ("reply_outlook.eml", "Hello Younghee, Yes, we are interested."),
])
def test_korean_japanese_and_html_replies_are_read_in_their_charsets(name, text):
    assert decision_for(name).excerpt.startswith(text)


def test_a_broken_charset_is_read_as_far_as_it_goes():
    decision = decision_for("broken_charset_reply.eml")
    assert decision.examined.mail.subject == "Re: 김민수님, 한빛상사 견적 건"  # raw 8-bit EUC-KR
    assert "and then ok text" in decision.excerpt


def test_bounces_carry_recipient_status_and_the_original_message_id():
    hard = decision_for("bounce_postfix_user_unknown.eml")
    [event] = events_for(hard, datetime.now(UTC))
    assert isinstance(event, BounceDetected)
    assert (event.kind, event.status, event.recipient, event.detected_by) == (
        "hard", "5.1.1", "nobody@customer.example", "mailbox")
    assert event.original_message_id == ours(8)
    assert "User unknown in virtual mailbox table" in event.diagnostic
    soft = decision_for("bounce_soft_postfix_delayed.eml").examined.bounce
    assert (soft.kind, soft.status) == ("soft", "4.4.1")
    assert decision_for("bounce_yahoo.eml").examined.bounce.status == "554"


def test_a_bounce_found_only_by_its_recipient_goes_to_the_newest_open_enrollment():
    older = SentMessage("<old@sales.example>", enrollment(40), "bob@legacy.example", "Hello",
                        SENT_AT - timedelta(days=3), open=True)
    ended = SentMessage("<ended@sales.example>", enrollment(41), "bob@legacy.example", "Hi",
                        SENT_AT + timedelta(days=1), open=False)
    decision = decision_for("bounce_exchange_legacy.eml", [*SENT, older, ended])
    assert decision.sent.enrollment_id == enrollment(13)


def test_the_subject_fallback_considers_open_enrollments_only():
    closed = [s if s.enrollment_id != enrollment(1) else
              SentMessage(s.message_id, s.enrollment_id, s.recipient, s.subject, s.sent_at, False)
              for s in SENT]
    decision = decision_for("reply_mobile_no_headers.eml", closed)
    assert decision.label == "unrelated"
    assert "no In-Reply-To or References header" in decision.reasons
    # by headers, an ended enrollment still gets the reply on record
    assert decision_for("reply_euc_kr.eml", closed).sent.enrollment_id == enrollment(1)


def test_auto_replies_are_recorded_and_never_taken_for_replies():
    [event] = events_for(decision_for("auto_korean_subject_bujaejung.eml"), datetime.now(UTC))
    assert isinstance(event, AutoReplyDetected)
    assert event.reason.startswith("out-of-office subject")
    reasons = {name: decision_for(name).examined.auto_reply for name in EXPECTED
               if name.startswith("auto_")}
    assert reasons["auto_outlook_ooo.eml"] == "Auto-Submitted: auto-generated"
    assert reasons["auto_precedence_bulk_ticket.eml"] == "X-Autorespond header"
    assert reasons["auto_lotus_notes.eml"] == "Precedence: auto_reply"
    assert reasons["auto_read_receipt.eml"].startswith("read receipt")


@pytest.mark.parametrize("subject, expected", [
    ("Re: 견적 건", "견적 건"),
    ("RE: FW: Re: 견적 건", "견적 건"),
    ("답장: 회신: 견적 건", "견적 건"),
    ("Re[2]: 견적 건", "견적 건"),
    ("ＲＥ： 견적 건", "견적 건"),  # full-width, as some Korean clients write it
    ("[EXTERNAL] Re: Quote for Acme", "quote for acme"),
    ("자동 회신: 견적 건", "견적 건"),
    ("Automatic reply: RE: Quote", "quote"),
    ("Fwd:   Quote   for   Acme", "quote for acme"),
    ("Aw: Angebot", "angebot"),
    ("Re:", ""),
])
def test_subjects_are_normalised_without_reply_prefixes(subject, expected):
    assert normalize_subject(subject) == expected


@pytest.mark.parametrize("subject", ["Auto parts quote", "Vacation package pricing",
                                     "Re: 부품 견적", "Out of stock items",
                                     "Abwesenheitskalender 2027", "Réponse à votre demande",
                                     "自动化方案报价"])
def test_ordinary_subjects_are_not_taken_for_auto_replies(subject):
    raw = f"From: a@b.example\r\nSubject: {subject}\r\n\r\nhello\r\n".encode()
    assert examine_raw(raw).auto_reply is None


def test_a_copy_of_our_own_follow_up_is_not_a_reply_to_the_first_email():
    raw = (f"From: younghee@sales.example\r\nTo: kim@customer.example\r\nSubject: Re: 김민수님,"
           f" 한빛상사 견적 건\r\nMessage-ID: {ours(2)}\r\nIn-Reply-To: {ours(1)}\r\n\r\n"
           "혹시 검토해 보셨을까요?\r\n").encode()
    decision = decide(examine_raw(raw), SENT)
    assert (decision.label, decision.reasons) == ("unrelated", ("a copy of a message we sent",))


def test_a_person_quoting_a_delivery_failure_is_not_a_bounce():
    raw = ("From: kim@customer.example\r\nSubject: Re: Quote for Acme Corp\r\n"
           f"In-Reply-To: {ours(3)}\r\n\r\nYour message could not be delivered to my colleague"
           " <x@customer.example>: he left. This is a permanent error.\r\n").encode()
    assert decide(examine_raw(raw), SENT).label == "reply"


def test_a_message_over_25_mb_is_read_from_its_start_quickly():
    raw = (f"From: john.doe@gmail.com\r\nSubject: Re: Quote for Acme Corp\r\nIn-Reply-To: "
           f"{ours(3)}\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
           "Content-Type: text/plain\r\n\r\nSigned contract attached.\r\n--b\r\n"
           "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           ).encode() + b"QUFB\r\n" * (26 * 1024 * 1024 // 6)
    # no timing assertion (the machine is shared): the reasons say only the start was read
    decision = decide(examine_raw(raw), SENT)
    assert (decision.label, decision.excerpt) == ("reply", "Signed contract attached.")
    assert "read only the first MiB (a larger message)" in decision.reasons


@pytest.mark.parametrize("raw", [b"", b"\x00" * 100, b"\r\n\r\n", b"From: <<<>>>\r\n\r\n",
                                 b"Content-Type: multipart/report; report-type=delivery-status"
                                 b"\r\n\r\n--x\r\n\r\n", "한글\udcff".encode("utf-8", "surrogateescape")])
def test_garbage_is_unrelated_not_an_error(raw):
    assert decide(examine_raw(raw), SENT).label == "unrelated"


def test_a_message_that_breaks_the_reader_is_unrelated_and_still_has_an_identity(monkeypatch):
    def choke(mail):
        raise RecursionError("deeply nested MIME")

    monkeypatch.setattr("services.thread_watcher.domain.read_bounce", choke)
    first, second = (examine_raw(raw) for raw in (b"Subject: a\r\n\r\n", b"Subject: b\r\n\r\n"))
    assert decide(first, SENT).label == "unrelated"
    assert first.reasons == ("unreadable message (RecursionError)",)
    assert first.mail.key != second.mail.key  # each is examined once, not once for all


def test_the_dev_mailbox_messages_are_what_they_claim_to_be():
    original = message_from_bytes(
        f"From: Younghee <younghee@sales.example>\r\nTo: kim@customer.example\r\n"
        f"Subject: 김민수님, 한빛상사 견적 건\r\nMessage-ID: {ours(1)}\r\n\r\nHi\r\n".encode(),
        policy=policy.default)
    now = datetime.now(UTC)
    decisions = [decide(examine_raw(raw), SENT) for raw in (
        reply_to(original, now, "네"), bounce_of(original, now), bounce_of(original, now, True),
        auto_reply_to(original, now))]
    assert [(d.label, d.sent.enrollment_id) for d in decisions] == [
        ("reply", enrollment(1)), ("bounce hard", enrollment(1)), ("bounce soft", enrollment(1)),
        ("auto-reply", enrollment(1))]


def test_mailbox_urls_name_mailboxes_without_their_passwords():
    imaps, imap, maildir = parse_mailboxes(
        "imaps://rep%40sales.example:p%40ss@imap.example.com?folders=INBOX,Bounces,"
        " imap://u:pw@127.0.0.1:1143?idle=0 maildir:///var/mail/dev")
    assert (imaps.name, imaps.password, imaps.port, imaps.folders, imaps.idle, imaps.tls) == (
        "imaps://rep@sales.example@imap.example.com:993", "p@ss", 993,
        ("INBOX", "Bounces"), True, True)
    assert (imap.name, imap.idle, imap.tls) == ("imap://u@127.0.0.1:1143", False, False)
    assert (maildir.name, str(maildir.path)) == ("maildir:///var/mail/dev", "/var/mail/dev")
    assert imaps.redact("LOGIN failed for p@ss") == "LOGIN failed for ***"
    [quotes] = parse_mailboxes("imap://u:a%22b%5Cc@h")  # a"b\c, escaped in an IMAP command
    assert quotes.redact('LOGIN u "a\\"b\\\\c"') == 'LOGIN u "***"'
    assert "p@ss" not in repr(imaps)
    with pytest.raises(ValueError, match="more than once"):
        parse_mailboxes("imap://u:a@h imap://u:b@h")


def test_the_classify_command_explains_its_decision(capsys, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert cli.main(["mail", "classify", str(FIXTURES / "bounce_gmail.eml")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith(
        "bounce_gmail.eml: bounce recipient-permanent / user-unknown (rule user-unknown)")
    assert "status       5.1.1" in out and "recipient    no.such.user@gmail.com" in out
    assert f"original     {ours(14)}" in out
    assert "watcher      bounce hard" in out
    assert "DATABASE_URL is not set" in out

    assert cli.main(["mail", "classify", "--json", str(FIXTURES / "reply_gmail.eml")]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert (answer["kind"], answer["class"], answer["decision"]) == ("reply", None, "unrelated")
    assert answer["watcher"]["enrollment_id"] is None
    assert (f"In-Reply-To/References name no message we sent ({ours(3)})"
            in answer["watcher"]["reasons"])


def test_the_classify_command_reads_directories_and_standard_input(capsys, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert cli.main(["mail", "classify", "--json", str(FIXTURES / "corpus")]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == len(list((FIXTURES / "corpus").glob("*.eml")))  # not build.py
    by_file = {Path(line["file"]).name: line for line in lines}
    dmarc = by_file["gmail_dmarc_unauthenticated.eml"]
    assert (dmarc["kind"], dmarc["class"], dmarc["reason"], dmarc["rule"]) == (
        "bounce", "sender-side", "sender-auth", "dmarc")
    assert dmarc["recipients"] == ["ceo@workspace-customer.example"]
    assert by_file["bad_no_recipient.eml"]["notes"] == ["no-recipient"]

    raw = (FIXTURES / "auto_outlook_ooo.eml").read_bytes()
    monkeypatch.setattr("sys.stdin", type("In", (), {"buffer": __import__("io").BytesIO(raw)}))
    assert cli.main(["mail", "classify", "--json", "-"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert (answer["file"], answer["kind"], answer["rule"]) == (
        "<stdin>", "auto-reply", "Auto-Submitted: auto-generated")


def test_the_classify_command_says_which_paths_it_could_not_read(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert cli.main(["mail", "classify", str(tmp_path / "missing.eml"), str(tmp_path),
                     str(FIXTURES / "reply_gmail.eml")]) == 1
    captured = capsys.readouterr()
    assert "missing.eml: No such file or directory" in captured.err
    assert "no *.eml file or Maildir message in this directory" in captured.err
    assert "reply_gmail.eml: reply" in captured.out  # the readable one is still reported
