"""Rendering and message building for email steps: pure functions, no I/O."""

from __future__ import annotations

import html
import uuid
from dataclasses import dataclass
from datetime import datetime
from email import base64mime
from email._policybase import Compat32
from email.header import Header
from email.message import Message as MimePart
from email.mime.multipart import MIMEMultipart
from email.utils import format_datetime, formataddr
from typing import Callable, Mapping

from contracts.merge_fields import placeholders
from contracts.texts import MISSING_MERGE_VALUE, TextError, said
from contracts.values import DEFAULT_LANGUAGE
from sequences.link_tracking import Redirect, html_with_links, text_with_links
from sequences.i18n import N_, translate

_MESSAGE_ID_NAMESPACE = uuid.UUID("0b8e8f7e-61a4-4a1e-9d6c-3f3f1f1c2b7a")


class MissingMergeValue(TextError):
    """A variable without fallback has no value: sending would leave a gap ("Hi ,")."""

    def __init__(self, variable: str):
        super().__init__(said(MISSING_MERGE_VALUE, variable=f"{{{{{variable}}}}}"))
        self.variable = variable


def _verbatim(text: str) -> str:
    return text


def render(
    template: str,
    values: Mapping[str, str],
    escape: Callable[[str], str] = _verbatim,
    missing: list[str] | None = None,
) -> str:
    """Fill merge variables from the contact's `values` (by field), using fallbacks for empties.
    `escape` applies to everything, text and values alike (html.escape for the HTML part).
    An empty value without fallback raises MissingMergeValue, unless a `missing` list is given:
    then the placeholder stays as written and its name is added there (previews, tasks)."""
    out, last = [], 0
    for p in placeholders(template):
        value = (values.get(p.field or "") or "").strip() or (p.fallback or "").strip()
        if not value:
            if missing is None:
                raise MissingMergeValue(p.variable)
            missing.append(p.variable)
            value = template[p.start : p.end]
        out += [escape(template[last : p.start]), escape(value)]
        last = p.end
    out.append(escape(template[last:]))
    return "".join(out)


def message_id_for(enrollment_id: uuid.UUID, step_id: uuid.UUID, sender_email: str) -> str:
    """Stable per step: a re-send after a crash carries the same id, so clients fold it and the
    mailer can ask whether it went through."""
    token = uuid.uuid5(_MESSAGE_ID_NAMESPACE, f"{enrollment_id}:{step_id}")
    return f"<{token}@{sender_email.rsplit('@', 1)[1]}>"


@dataclass(frozen=True)
class PreviousEmail:
    message_id: str
    thread_subject: str
    references: tuple[str, ...]


@dataclass(frozen=True)
class Thread:
    subject: str  # the subject line to send
    thread_subject: str  # the subject that started the thread
    in_reply_to: str | None
    references: tuple[str, ...]


def thread_for(rendered_subject: str | None, previous: PreviousEmail | None) -> Thread:
    """A step with a subject starts a thread; one without continues the previous email's."""
    if rendered_subject is not None or previous is None:
        subject = rendered_subject or ""
        return Thread(subject, subject, None, ())
    return Thread(
        subject=f"Re: {previous.thread_subject}",
        thread_subject=previous.thread_subject,
        in_reply_to=previous.message_id,
        references=(*previous.references, previous.message_id),
    )


@dataclass(frozen=True)
class OutgoingEmail:
    sender_name: str
    sender_email: str
    recipient: str
    thread: Thread
    text_body: str
    html_body: str
    message_id: str
    date: datetime
    unsubscribe_url: str | None = None
    variant: str | None = None  # the A/B letter whose subject and body these are


@dataclass(frozen=True)
class Links:
    """The per-email links: open tracking pixel and unsubscribe page (None in test emails);
    `pixel_url` None and `click_redirect` None where the sequence tracks no opens / clicks."""

    pixel_url: str | None
    unsubscribe_url: str
    click_redirect: Redirect | None = None


def text_body_for(template: str, values: Mapping[str, str], links: Links | None,
                  missing: list[str] | None = None, language: str = DEFAULT_LANGUAGE) -> str:
    """The plain-text part; with `links`, a footer in the sequence's `language`."""
    body = text_with_links(render(template, values, missing=missing),
                           links.click_redirect if links is not None else None)
    if links is not None:
        lead = translate(language, "No longer want these emails?")
        link = translate(language, "Unsubscribe: %(url)s", url=links.unsubscribe_url)
        body += f"\n\n--\n{lead} {link}\n"
    return body


def html_body_for(template: str, values: Mapping[str, str], links: Links | None,
                  missing: list[str] | None = None, language: str = DEFAULT_LANGUAGE) -> str:
    """The HTML part: the body with merge values (and everything else) escaped; with `links`,
    a footer in the sequence's `language` and the open pixel. Links are clickable (through
    their redirects when clicks are tracked)."""
    escaped = html_with_links(render(template, values, missing=missing),
                              links.click_redirect if links is not None else None)
    body = "<br>\n".join(escaped.replace("\r\n", "\n").split("\n"))
    if links is not None:
        lead = html.escape(translate(language, "No longer want these emails?"))
        link = html.escape(translate(language, "Unsubscribe"))
        body += (
            f'<p style="font-size:12px;color:#888">{lead} '
            f'<a href="{html.escape(links.unsubscribe_url)}">{link}</a></p>'
        )
        if links.pixel_url is not None:
            body += f'<img src="{html.escape(links.pixel_url)}" width="1" height="1" alt="">'
    return f"<!doctype html><html><body>{body}</body></html>"


class _Unfolded(Compat32):
    """compat32 with lines up to RFC 5322's 998, and an ASCII header that fits written as it
    is: compat32 passes every value through a `Header` to fold it, which leaves such a value
    unchanged (the same bytes: tests/unit/test_rendering.py) at a third of the
    mailer's CPU."""

    def _fold(self, name, value, sanitize):
        if (isinstance(value, str) and value.isascii() and "\n" not in value
                and "\r" not in value and len(name) + 2 + len(value) <= self.max_line_length):
            return f"{name}: {value}{self.linesep}"
        return super()._fold(name, value, sanitize)


_UNFOLDED = _Unfolded(max_line_length=998)


def _text_part(text: str, subtype: str) -> MimePart:
    """What `MIMEText(text, subtype, "utf-8")` makes, byte for byte, without its parsing of
    the headers it has just set (set_charset: a sixth of building a message)."""
    part = MimePart()
    part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
    part["MIME-Version"] = "1.0"
    part["Content-Transfer-Encoding"] = "base64"
    part.set_payload(base64mime.body_encode(text.encode("utf-8")))
    return part


@dataclass(frozen=True)
class Message:
    """What goes to the SMTP server: the envelope and the message's bytes."""

    sender: str
    recipient: str
    payload: bytes


def build_message(email: OutgoingEmail) -> Message:
    """multipart/alternative (text + HTML, UTF-8) with threading and unsubscribe headers.

    Built with the email package's compat32 classes: 3.5x cheaper than EmailMessage, whose
    header parsing was a third of the mailer's CPU. They do not check header values, so this
    does: CR/LF in any of them is refused here, a second guard after the validation when the
    sequence and the contact were saved."""
    raw = {"From": email.sender_name + email.sender_email, "To": email.recipient,
           "Subject": email.thread.subject, "Message-ID": email.message_id,
           "References": " ".join(email.thread.references),
           "List-Unsubscribe": email.unsubscribe_url or ""}
    unsafe = [name for name, value in raw.items() if "\r" in value or "\n" in value]
    if unsafe:
        raise TextError(said(N_("header injection refused: CR/LF in %(headers)s"),
                             headers=", ".join(unsafe)))
    headers: dict[str, str | Header] = {
        "From": formataddr((email.sender_name, email.sender_email), charset="utf-8"),
        "To": email.recipient,
        "Subject": Header(email.thread.subject, "utf-8", header_name="Subject"),
        "Date": format_datetime(email.date),
        "Message-ID": email.message_id,
    }
    if email.thread.in_reply_to:
        headers["In-Reply-To"] = email.thread.in_reply_to
        headers["References"] = " ".join(email.thread.references)
    if email.unsubscribe_url:
        # RFC 8058 one-click: mail clients POST "List-Unsubscribe=One-Click" to the URL
        headers["List-Unsubscribe"] = f"<{email.unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    # A boundary of our own: for one it makes, the email package compiles a regular expression
    # per message to check the text for it (6% of the mailer's CPU). The parts are base64,
    # whose lines never hold "=_", so this one cannot occur in them.
    message = MIMEMultipart("alternative", boundary=f"=_{uuid.uuid4().hex}")
    for name, value in headers.items():
        message[name] = value
    message.attach(_text_part(email.text_body, "plain"))
    message.attach(_text_part(email.html_body, "html"))
    # lines up to RFC 5322's 998: folding a long unsubscribe URL would only add whitespace to it
    return Message(email.sender_email, email.recipient,
                   message.as_bytes(policy=_UNFOLDED))


# A contact to preview steps with when none is chosen.
SAMPLE_CONTACT = {"name": "김민수", "company": "한빛상사", "job_title": "과장",
                  "owner_name": "이영희"}


# --- sender mailboxes: pausing after sender-side rejections -------------------------------------


def should_pause_mailbox(rejections: int, pause_after: int, paused: bool) -> bool:
    """Sender-side rejections since the window began (or the last resume) reached the threshold."""
    return not paused and rejections >= pause_after
