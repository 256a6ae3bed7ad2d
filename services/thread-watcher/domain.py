"""What the thread-watcher decides about one message, and the events that follow. Pure: no I/O.

    raw bytes --parse--> Mail --examine--> Examined --(look up the sent messages it names:
    I/O, by the caller)--> decide --> Decision --events_for--> [ReplyDetected | ...]

The matching rule and the classification are documented in this service's README.md.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from email.message import Message
from typing import Any, Literal, Sequence

from contracts.base import Event
from contracts.events import AutoReplyDetected, BounceDetected, ReplyDetected
from sequences.out_of_office import ReturnDate, return_date
from sequences.reply_intent import IntentVerdict, classify_intent
from services.thread_watcher.bounces import Bounce, read_bounce
from services.thread_watcher.mail import (
    Mail,
    body_text,
    excerpt,
    mime_problems,
    own_text,
    parse,
    unreadable,
)

Kind = Literal["reply", "bounce", "auto_reply", "unrelated"]
MessageKind = Literal["bounce", "auto-reply", "reply", "other"]

# Precedence values that mark machine-sent mail (RFC 3834 and long practice).
_MACHINE_PRECEDENCE = {"auto_reply", "bulk", "junk"}
# Headers that vacation responders and ticket systems set on their answers.
_AUTO_REPLY_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Autoreply-From")
# Subjects of automatic answers: phrases that say so on their own, and words that do only as a
# prefix with a colon ("Auto: …", but not "Auto parts quote").
_AUTO_PHRASES = (
    r"out of (the )?office|automatic reply|auto(matic)?[- ]?(reply|response|answer)|autoreply"
    r"|away from (the )?office|부재\s?중|자동\s?(회신|응답|답장|답변)|휴가\s?중|不在|自動(応答|返信)"
    r"|abwesenheits(notiz|meldung|nachricht)|automatische antwort|réponse automatique"
    r"|message d'absence"
    r"|respuesta automática|fuera de la oficina|resposta automática|fora do escritório"
    r"|自动(回复|答复)|自動回覆"
)
_AUTO_PREFIXES = rf"{_AUTO_PHRASES}|auto|vacation"
_AUTO_SUBJECT = re.compile(
    rf"^\s*[\[(]?\s*(({_AUTO_PHRASES})|(auto|vacation)\s*:)|is out of the office", re.I)
# Reply and forward prefixes of mail clients in many languages (Korean clients write 답장,
# 회신, 전달), an answer counter ("Re[2]:"), tags gateways prepend ("[EXTERNAL]", "[외부메일]")
# and auto-reply prefixes; removed repeatedly from the front of a subject.
_SUBJECT_PREFIX = re.compile(
    r"^\s*(\[[^\]]{1,40}\]\s*|(re|fw|fwd|aw|sv|vs|antw|wg|tr|rif|odp|ynt|답장|회신|답변|전달|"
    rf"{_AUTO_PREFIXES})\s*(\[\d+\]|\(\d+\))?\s*:\s*)",
    re.IGNORECASE,
)
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class SentMessage:
    """A message we sent, as the thread-watcher remembers it."""

    message_id: str
    enrollment_id: uuid.UUID
    recipient: str
    subject: str
    sent_at: datetime
    open: bool  # the enrollment has not ended (replied, bounced, stopped or done)
    workspace_id: uuid.UUID | None = None  # whose: what it causes is recorded there


@dataclass(frozen=True)
class Wanted:
    """Which sent messages could concern a message: those it names, those to its people."""

    message_ids: frozenset[str]
    addresses: frozenset[str]


@dataclass(frozen=True)
class Examined:
    mail: Mail
    bounce: Bounce | None
    auto_reply: str | None  # why it is an automatic answer
    reasons: tuple[str, ...]

    def wanted(self) -> Wanted:
        ids = {*self.mail.in_reply_to, *self.mail.references}
        if self.mail.message_id:
            ids.add(self.mail.message_id)  # to recognise a copy of our own mail
        if self.bounce is not None:
            if self.bounce.original_message_id:
                ids.add(self.bounce.original_message_id)
            return Wanted(frozenset(ids), frozenset(self.bounce.recipients))
        return Wanted(frozenset(ids), frozenset({self.mail.sender} - {""}))


@dataclass(frozen=True)
class Decision:
    kind: Kind
    examined: Examined
    reasons: tuple[str, ...]
    sent: SentMessage | None = None  # the message of ours it concerns
    matched_by: str | None = None
    excerpt: str = ""  # a reply's own words
    intent: IntentVerdict | None = None  # what a reply wants (sequences/reply_intent.py)
    back: ReturnDate | None = None  # when an auto-reply's writer is back (out_of_office.py)

    @property
    def label(self) -> str:
        bounce = self.examined.bounce
        if self.kind == "bounce" and bounce is not None:
            return f"bounce {bounce.kind}"
        return self.kind.replace("_", "-")

    def as_dict(self) -> dict[str, Any]:
        mail, bounce = self.examined.mail, self.examined.bounce
        return {
            "decision": self.label,
            "kind": self.kind,
            "enrollment_id": str(self.sent.enrollment_id) if self.sent else None,
            "matched_message_id": self.sent.message_id if self.sent else None,
            "matched_by": self.matched_by,
            "message_id": mail.message_id,
            "sender": mail.sender,
            "subject": mail.subject,
            "date": mail.date.isoformat() if mail.date else None,
            "reasons": list(self.reasons),
            "bounce": None if bounce is None else {
                "kind": bounce.kind, "class": bounce.verdict.bounce_class,
                "reason": bounce.verdict.reason, "rule": bounce.verdict.rule,
                "recipients": list(bounce.recipients),
                "status": bounce.status, "diagnostic": bounce.diagnostic,
                "original_message_id": bounce.original_message_id, "notes": list(bounce.notes)},
            "auto_reply": self.examined.auto_reply,
            "excerpt": self.excerpt or None,
            "intent": self.intent.intent if self.intent else None,
            "intent_rule": self.intent.rule if self.intent else None,
            "return_date": self.back.on.isoformat() if self.back and self.back.on else None,
        }


# --- classification ----------------------------------------------------------------------------


def examine_raw(raw: bytes) -> Examined:
    """Examine a raw message; whatever it holds, the answer is an Examined, not an exception."""
    try:
        return examine(parse(raw))
    except Exception as error:  # a message nothing could read: unrelated, and the watcher goes on
        return Examined(unreadable(raw), None, None,
                        (f"unreadable message ({type(error).__name__})",))


def examine(mail: Mail) -> Examined:
    bounce, reasons = read_bounce(mail)
    if bounce is not None:
        return Examined(mail, bounce, None, reasons)
    auto = auto_reply_reason(mail)
    # a message cut at the first MiB has lost its closing boundaries: that is not broken MIME
    problems = [p for p in mime_problems(mail.message)
                if not (mail.truncated and p == "broken-mime")]
    notes = (*reasons, *(["read only the first MiB (a larger message)"] if mail.truncated else []),
             *problems)
    return Examined(mail, None, auto, (*notes, *([auto] if auto else [])))


def auto_reply_reason(mail: Mail) -> str | None:
    """Why this is an automatic answer (out of office, vacation, read receipt), or None."""
    message = mail.message
    auto_submitted = (message.get("Auto-Submitted") or "").strip().lower()
    if auto_submitted and not auto_submitted.startswith("no"):
        return f"Auto-Submitted: {auto_submitted}"
    for name in _AUTO_REPLY_HEADERS:
        if message.get(name) is not None:
            return f"{name} header"
    for name in ("Precedence", "X-Precedence"):
        precedence = (message.get(name) or "").strip().lower()
        if precedence in _MACHINE_PRECEDENCE:
            return f"{name}: {precedence}"
    if _is_read_receipt(message):
        return "read receipt (multipart/report; report-type=disposition-notification)"
    if _AUTO_SUBJECT.search(mail.subject):
        return f"out-of-office subject ({mail.subject!r})"
    return None


def _is_read_receipt(message: Message) -> bool:
    return message.get_content_type() == "multipart/report" and (
        message.get_param("report-type") or ""
    ).lower() == "disposition-notification"


def message_kind(examined: Examined) -> MessageKind:
    """What a message is on its own, before it is matched to anything we sent: a bounce, an
    automatic answer, a reply (it names a message it answers, or its subject says it is one:
    `Re:`, `답장:`, `AW:`), or other mail."""
    if examined.bounce is not None:
        return "bounce"
    if examined.auto_reply is not None:
        return "auto-reply"
    mail = examined.mail
    if mail.in_reply_to or mail.references or _SUBJECT_PREFIX.match(
            unicodedata.normalize("NFKC", mail.subject)):
        return "reply"
    return "other"


def classification(examined: Examined) -> dict[str, Any]:
    """What `sequences mail classify` says about a message on its own: its kind and, for a
    bounce, the class, reason and rule that decided it, whose delivery failed and which message
    of ours it carries. A flat mapping, so that more readings (a reply's intent, an
    out-of-office return date) are more keys."""
    bounce = examined.bounce
    facts: dict[str, Any] = {"kind": message_kind(examined), "class": None, "reason": None,
                             "rule": None, "recipients": [], "original_message_id": None,
                             "status": None, "diagnostic": None}
    if bounce is not None:
        verdict = bounce.verdict
        facts |= {"class": verdict.bounce_class, "reason": verdict.reason, "rule": verdict.rule,
                  "recipients": list(bounce.recipients),
                  "original_message_id": bounce.original_message_id, "status": bounce.status,
                  "diagnostic": bounce.diagnostic}
    elif examined.auto_reply is not None:
        facts["rule"] = examined.auto_reply
    if facts["kind"] == "reply":
        intent = reply_intent(examined.mail)
        facts |= {"intent": intent.intent, "intent_rule": intent.rule}
    elif facts["kind"] == "auto-reply":
        back = back_on(examined.mail)
        facts |= {"return_date": back.on.isoformat() if back.on else None,
                  "return_note": back.note}
    notes = bounce.notes if bounce is not None else tuple(
        "unreadable" if r.startswith("unreadable message") else r for r in examined.reasons
        if r in ("broken-mime", "unknown-charset") or r.startswith("unreadable message"))
    return facts | {"notes": list(notes)}


def normalize_subject(subject: str) -> str:
    """The subject without reply/forward/auto-reply prefixes and tags, case and width folded:
    `RE: [외부메일] 회신: 견적 건` and `견적 건` are the same."""
    text = unicodedata.normalize("NFKC", subject)
    while (shorter := _SUBJECT_PREFIX.sub("", text, count=1)) != text:
        text = shorter
    return _WHITESPACE.sub(" ", text).strip().casefold()


# --- matching ----------------------------------------------------------------------------------


def decide(examined: Examined, sent: Sequence[SentMessage]) -> Decision:
    """What the message is, and which of our sent messages (so which enrollment) it concerns."""
    if any(s.message_id == examined.mail.message_id for s in sent):
        # a copy of our own mail (Bcc to the rep, a rule filing it): it answers our earlier step
        return Decision("unrelated", examined, (*examined.reasons, "a copy of a message we sent"))
    if examined.bounce is not None:
        return _decided("bounce", examined, match_bounce(examined.bounce, sent))
    match = match_thread(examined.mail, sent)
    if examined.auto_reply is not None:
        decided = _decided("auto_reply", examined, match)
        if decided.sent is None:
            return decided
        back = back_on(examined.mail)
        return replace(decided, back=back, reasons=(*decided.reasons, back.note))
    if match[0] is None:
        return Decision("unrelated", examined, (*examined.reasons, *why_unmatched(examined.mail)))
    reply = excerpt(body_text(examined.mail.message))
    return _decided("reply", examined, match, reply, reply_intent(examined.mail))


def reply_intent(mail: Mail) -> IntentVerdict:
    """What a reply wants, read from its own words (no quoted history, no signature)."""
    return classify_intent(own_text(body_text(mail.message)))


def back_on(mail: Mail) -> ReturnDate:
    """When an auto-reply's writer is back, from its subject and own text and its Date."""
    return return_date(f"{mail.subject}\n{own_text(body_text(mail.message))}", mail.date)


def _decided(kind: Kind, examined: Examined, match: tuple[SentMessage | None, str | None],
             reply_excerpt: str = "", intent: IntentVerdict | None = None) -> Decision:
    sent, how = match
    found = (f"concerns {sent.message_id} (enrollment {sent.enrollment_id}), matched by {how}"
             if sent else "concerns no message we sent: nothing to record")
    if intent is not None:
        found += f"; intent {intent.intent} (rule {intent.rule or '-'})"
    return Decision(kind, examined, (*examined.reasons, found), sent, how, reply_excerpt, intent)


def match_thread(mail: Mail, sent: Sequence[SentMessage]) -> tuple[SentMessage | None, str | None]:
    """The rule: In-Reply-To, then References from the newest, naming a Message-ID we sent;
    failing that, the newest message we sent to the sender in one of their open enrollments
    whose subject is the same once prefixes are removed."""
    by_id = {s.message_id: s for s in sent}
    for message_id in (*mail.in_reply_to, *reversed(mail.references)):
        if message_id in by_id:
            return by_id[message_id], "headers"
    subject = normalize_subject(mail.subject)
    same_thread = [s for s in sent if s.open and subject and mail.sender == s.recipient.lower()
                   and normalize_subject(s.subject) == subject]
    return _newest(same_thread, "subject")


def match_bounce(bounce: Bounce, sent: Sequence[SentMessage]) -> tuple[SentMessage | None, str | None]:
    """The message the report carries; without one, the newest open one to a failed recipient.
    A report naming a message we did not send (the rep's own mail) concerns no enrollment."""
    if bounce.original_message_id is not None:
        by_id = {s.message_id: s for s in sent}
        found = by_id.get(bounce.original_message_id)
        return (found, "original Message-ID") if found else (None, None)
    return _newest([s for s in sent if s.open and s.recipient.lower() in bounce.recipients],
                   "failed recipient")


def _newest(candidates: list[SentMessage], how: str) -> tuple[SentMessage | None, str | None]:
    if not candidates:
        return None, None
    return max(candidates, key=lambda s: s.sent_at), how


def why_unmatched(mail: Mail) -> tuple[str, ...]:
    named = dict.fromkeys((*mail.in_reply_to, *mail.references))  # once each, in order
    headers = (f"In-Reply-To/References name no message we sent ({', '.join(named)})" if named
               else "no In-Reply-To or References header")
    subject = normalize_subject(mail.subject)
    return (headers, f"no open enrollment of {mail.sender or '(no sender)'} with a message "
                     f"whose subject is {subject!r}")


# --- events ------------------------------------------------------------------------------------


def events_for(decision: Decision, now: datetime) -> list[Event]:
    """The facts to record: none when the message concerns no enrollment."""
    sent = decision.sent
    if sent is None or decision.kind == "unrelated":
        return []
    mail = decision.examined.mail
    message_id = mail.message_id or mail.key
    received_at = mail.date or now
    if decision.kind == "reply":
        return [ReplyDetected(
            enrollment_id=sent.enrollment_id, message_id=message_id, in_reply_to=sent.message_id,
            sender=mail.sender or "(unknown)", received_at=received_at,
            excerpt=decision.excerpt[:500], matched_by=decision.matched_by or "headers",
            intent=decision.intent.intent if decision.intent else "other",
            intent_rule=decision.intent.rule if decision.intent else None)]
    if decision.kind == "auto_reply":
        return [AutoReplyDetected(
            enrollment_id=sent.enrollment_id, message_id=message_id,
            sender=mail.sender or "(unknown)", received_at=received_at,
            reason=decision.examined.auto_reply or "automatic reply",
            return_date=decision.back.on if decision.back else None,
            return_note=decision.back.note if decision.back else None)]
    bounce = decision.examined.bounce
    assert bounce is not None
    return [BounceDetected(
        enrollment_id=sent.enrollment_id, recipient=sent.recipient, kind=bounce.kind,
        status=bounce.status, diagnostic=bounce.diagnostic[:1000],
        original_message_id=bounce.original_message_id or sent.message_id,
        detected_by="mailbox", detected_at=now, bounce_class=bounce.verdict.bounce_class,
        reason=bounce.verdict.reason, rule=bounce.verdict.rule)]
