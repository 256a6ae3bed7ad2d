"""Bounces: is this message a delivery failure report, whose delivery failed, how badly, and
which message of ours did it carry? Pure functions, no I/O.

The failed recipients come from flufl.bounce, which knows RFC 3464 delivery status notifications
and the formats of many MTAs that do not follow it (Exim, qmail, Yahoo, older Exchange, ...).
Status code and diagnostic come from the report's own fields where it has them (RFC 3464), else
from the first enhanced status code in its text; why it failed (class, reason, rule) is decided
by the shared table in `sequences.bounce_reasons`, the same the mailer uses at send time. A
report that flufl.bounce cannot read (a provider's home-grown format, a Korean-language notice)
still counts when it looks like a delivery report and carries the Message-ID of a message we
sent (the recipient is then the one that message went to) or at least a failure status.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser

from flufl.bounce import all_failures

from sequences.bounce_reasons import Kind, Verdict, classify, status_code
from services.thread_watcher.mail import (
    Mail,
    body_text,
    header_text,
    message_ids,
    mime_problems,
    part_text,
)

# flufl.bounce logs every detector it runs at INFO, and a detector's crash with its traceback;
# a crash here is reported as a reason of the decision instead.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)

_DAEMON_SENDERS = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mailerdaemon|bounces?)[@+]",
                             re.IGNORECASE)
# Specific phrases only: "반송" alone also means returning goods, "delivery report" a shipment.
_BOUNCE_SUBJECTS = re.compile(
    r"undeliverable|undelivered mail|delivery status notification|delivery (failure|has failed)"
    r"|failure notice|returned mail|mail delivery failed|non[- ]?delivery report"
    r"|메일 ?(발송|전송|배달) ?실패|반송 ?메일|메일 ?반송|配信不能",
    re.IGNORECASE,
)
_ID_LINE = re.compile(r"^\s*Message-ID:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)
# Where a plain-text report's own words end and its copy of the original begins: the prose
# before it explains the failure, the headers after it (Received: ... TLS) must not.
_ORIGINAL_START = re.compile(
    r"^\s*(-+ ?(this is a copy|original message|below this line|the header|returned message)"
    r"|(received|return-path|message-id|dkim-signature|x-[\w-]+): )", re.IGNORECASE | re.MULTILINE)
_CONTEXT_LIMIT = 3000


@dataclass(frozen=True)
class Bounce:
    verdict: Verdict
    recipients: tuple[str, ...]  # lower case; empty when only the original Message-ID is known
    status: str | None  # enhanced status code (5.1.1), else the SMTP reply code (550)
    diagnostic: str
    original_message_id: str | None
    reasons: tuple[str, ...]
    # what was missing or broken (`no-recipient`, `no-original-message-id`, `broken-mime`,
    # `unknown-charset`): the verdict was reached as well as the message allowed
    notes: tuple[str, ...] = ()

    @property
    def kind(self) -> Kind:
        return self.verdict.kind


@dataclass(frozen=True)
class _Report:
    """What a report says about the first failed (or delayed) recipient."""

    action: str | None = None
    status: str | None = None
    diagnostic: str = ""


def delivery_report_sign(mail: Mail) -> str | None:
    """Why this message looks like a delivery report, or None. Gates the heuristic detectors
    so that a person's reply quoting "could not be delivered" is not taken for a bounce."""
    message = mail.message
    if message.get_content_type() == "multipart/report" and (
        message.get_param("report-type") or ""
    ).lower() == "delivery-status":
        return "multipart/report; report-type=delivery-status (RFC 3464)"
    if message.get("X-Failed-Recipients"):
        return "X-Failed-Recipients header"
    if _DAEMON_SENDERS.match(mail.sender) or not mail.sender and _null_return_path(message):
        return f"sent by the mail system ({mail.sender or 'null sender'})"
    if _BOUNCE_SUBJECTS.search(mail.subject):
        return f"delivery-failure subject ({mail.subject!r})"
    return None


def _null_return_path(message: Message) -> bool:
    return (message.get("Return-Path") or "").strip() == "<>"


def read_bounce(mail: Mail) -> tuple[Bounce | None, tuple[str, ...]]:
    """The bounce this message reports, if any, and the reasons for the verdict."""
    sign = delivery_report_sign(mail)
    if sign is None:
        return None, ()
    report = _delivery_status(mail.message)
    if report is None and _only_successes(mail.message):
        return None, (sign, "the report lists no failed delivery (Action: delivered/relayed)")
    temporary, permanent, library_note = _library_failures(mail.message)
    original = _original_message_id(mail)
    recipients = tuple(sorted(temporary | permanent))
    report = report or _report_from_text(mail.message)
    if not recipients and original is None and report.status is None:
        return None, (sign, library_note, "no failed recipient, no Message-ID of the original "
                                          "and no failure status")
    verdict = bounce_verdict(report, bool(temporary) and not permanent, _context(mail.message))
    notes = (*(["no-recipient"] if not recipients else []),
             *(["no-original-message-id"] if original is None else []),
             *mime_problems(mail.message))
    reasons = (sign, library_note, _why(verdict, report), *notes)
    return Bounce(verdict, recipients, report.status, report.diagnostic[:1000], original, reasons,
                  notes), reasons


def _library_failures(message: Message) -> tuple[set[str], set[str], str]:
    try:
        temporary, permanent = all_failures(message)
    except Exception as error:  # a detector choking on odd input: no recipients from it
        return set(), set(), f"flufl.bounce could not read it ({type(error).__name__})"
    decoded = ({a.decode("ascii").lower() for a in found if a} for found in (temporary, permanent))
    temporary_set, permanent_set = decoded
    if not temporary_set | permanent_set:
        return set(), set(), "flufl.bounce found no failed recipient"
    return temporary_set, permanent_set, (
        f"flufl.bounce: failed {sorted(permanent_set)}, delayed {sorted(temporary_set)}")


def bounce_verdict(report: _Report, only_temporary: bool, context: str = "") -> Verdict:
    """Class, reason and rule of the failure; `Action: delayed` (or flufl.bounce finding only
    delayed recipients) makes it temporary, so it never blames the address."""
    delayed = (report.action or "").startswith("delayed") or only_temporary
    return classify(report.status, report.diagnostic, temporary=delayed, context=context)


def _why(verdict: Verdict, report: _Report) -> str:
    status = f"status {report.status}" if report.status else "no status code"
    return (f"{verdict.kind}: {verdict.bounce_class} / {verdict.reason} (rule {verdict.rule}, "
            f"{status}{', temporary' if verdict.temporary else ''})")


def _context(message: Message) -> str:
    """The report's own prose, without the copy of the original it quotes."""
    text = body_text(message)[: _CONTEXT_LIMIT * 2]
    cut = _ORIGINAL_START.search(text)
    return (text[: cut.start()] if cut else text)[:_CONTEXT_LIMIT]


# --- RFC 3464 delivery status ------------------------------------------------------------------


def _status_blocks(message: Message) -> list[Message]:
    blocks = []
    for part in message.walk():
        if part.get_content_type() == "message/delivery-status" and part.is_multipart():
            # compat32 parses the part into header blocks: one per message, then per recipient
            blocks += [b for b in part.get_payload() if isinstance(b, Message)]
    return blocks


def _delivery_status(message: Message) -> _Report | None:
    """The first recipient block whose delivery failed or is delayed."""
    for block in _status_blocks(message):
        action = (block.get("Action") or "").strip().lower()
        if action.startswith(("failed", "delayed", "error")):
            return _Report(
                action=action,
                status=status_code(block.get("Status") or "")
                or status_code(block.get("Diagnostic-Code") or ""),
                diagnostic=_clean_diagnostic(header_text(block, "Diagnostic-Code")),
            )
    return None


def _only_successes(message: Message) -> bool:
    actions = [(b.get("Action") or "").strip().lower() for b in _status_blocks(message)]
    actions = [a for a in actions if a]
    return bool(actions) and all(a.startswith(("delivered", "relayed", "expanded"))
                                 for a in actions)


def _clean_diagnostic(value: str) -> str:
    # "smtp; 550 5.1.1 <kim@…>: Recipient address rejected" without its type prefix
    return value.split(";", 1)[1].strip() if ";" in value[:12] else value


# --- non-standard reports ----------------------------------------------------------------------


def _report_from_text(message: Message) -> _Report:
    """Status and diagnostic of a report without RFC 3464 fields: the line holding the first
    enhanced status code (or SMTP reply code) of its text."""
    text = _context(message)
    for line in text.splitlines():
        status = status_code(line)
        if status:
            return _Report(status=status, diagnostic=" ".join(line.split()))
    return _Report(diagnostic=" ".join(text.split())[:300])


def _original_message_id(mail: Mail) -> str | None:
    """The Message-ID of the message that bounced: from the attached original (message/rfc822
    or text/rfc822-headers), else from a `Message-ID:` line of the quoted original in the text."""
    for part in mail.message.walk():
        headers = _attached_headers(part)
        if headers is not None:
            found = message_ids(header_text(headers, "Message-ID"))
            if found:
                return found[0]
    for part in mail.message.walk():
        if part.get_content_maintype() == "text" and not part.is_multipart():
            for candidate in _ID_LINE.findall(part_text(part)):
                if candidate != mail.message_id:
                    return candidate
    return None


def _attached_headers(part: Message) -> Message | None:
    content_type = part.get_content_type()
    if content_type == "message/rfc822" and part.is_multipart():
        inner = part.get_payload(0)
        return inner if isinstance(inner, Message) else None
    if content_type == "text/rfc822-headers":
        return HeaderParser().parsestr(part_text(part))
    return None
