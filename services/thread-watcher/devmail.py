"""What the other side sends back to one of our emails: a reply, a bounce, an out-of-office
answer. The dev stack's `sequences mail drop-…` commands, the tests and the benchmark put these
into a mailbox to see the whole flow. Pure: each returns the raw bytes of a message.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from email.message import EmailMessage, Message
from email.utils import format_datetime, make_msgid, parseaddr

from services.thread_watcher.mail import message_ids

_CRLF_POLICY = EmailMessage().policy.clone(linesep="\r\n")


def _address(message: Message, header: str) -> str:
    return parseaddr(str(message.get(header, "")))[1]


def _answer(original: Message, subject_prefix: str, now: datetime) -> EmailMessage:
    """A message from the original's recipient back to its sender, in its thread."""
    contact, rep = _address(original, "To"), _address(original, "From")
    message_id = str(original["Message-ID"])
    message = EmailMessage(policy=_CRLF_POLICY)
    message["From"] = contact
    message["To"] = rep
    message["Subject"] = f"{subject_prefix}{original['Subject']}"
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=contact.rsplit("@", 1)[-1])
    message["In-Reply-To"] = message_id
    message["References"] = " ".join(
        (*message_ids(str(original.get("References", ""))), message_id))
    return message


def reply_to(original: Message, now: datetime, text: str = "") -> bytes:
    message = _answer(original, "Re: ", now)
    quoted = "\n".join(f"> {line}" for line in _plain_text(original).splitlines())
    message.set_content(f"{text or 'Thanks, this looks good. Can we talk this week?'}\n\n"
                        f"On {original['Date']}, {original['From']} wrote:\n{quoted}\n")
    return message.as_bytes()


def auto_reply_to(original: Message, now: datetime, back: date | None = None) -> bytes:
    """An out-of-office answer naming its return date (`back`; three days after `now` unless
    given), in Korean and English."""
    back = back or (now + timedelta(days=3)).date()
    message = _answer(original, "자동 회신: ", now)
    message["Auto-Submitted"] = "auto-replied"
    message.set_content(f"부재중입니다. {back.month}월 {back.day}일에 복귀합니다.\n"
                        f"I am out of the office until {back:%B} {back.day}.\n")
    return message.as_bytes()


def bounce_of(original: Message, now: datetime, soft: bool = False) -> bytes:
    """A Postfix-style RFC 3464 report: 550 5.1.1 user unknown, or 552 5.2.2 mailbox full."""
    recipient, rep = _address(original, "To"), _address(original, "From")
    code, status, why = ("552", "5.2.2", "Mailbox full") if soft else \
        ("550", "5.1.1", "Recipient address rejected: User unknown")
    boundary = make_msgid(domain="bounce").strip("<>")
    headers = "".join(f"{name}: {value}\n" for name, value in original.items())
    text = f"""\
From: MAILER-DAEMON@{rep.rsplit('@', 1)[-1]} (Mail Delivery System)
To: {rep}
Subject: Undelivered Mail Returned to Sender
Date: {format_datetime(now)}
Message-ID: {make_msgid(domain='mailer-daemon.invalid')}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system. Your message could not be delivered to one or more recipients.

<{recipient}>: {code} {status} {why}

--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mailer-daemon.invalid

Final-Recipient: rfc822; {recipient}
Action: failed
Status: {status}
Diagnostic-Code: smtp; {code} {status} <{recipient}>: {why}

--{boundary}
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

{headers}
--{boundary}--
"""
    return text.replace("\n", "\r\n").encode("utf-8")


def _plain_text(original: Message) -> str:
    if isinstance(original, EmailMessage):
        body = original.get_body(("plain",))
        if body is not None:
            return body.get_content()
    return ""
