"""Reading raw messages defensively: whatever arrives (broken MIME, 8-bit headers, unknown or
mislabelled charsets such as EUC-KR sent as ks_c_5601-1987, huge attachments) becomes a `Mail`,
never an exception. Pure functions, no I/O.
"""

from __future__ import annotations

import codecs
import hashlib
import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.header import decode_header
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

from mailparser_reply import EmailReplyParser

# Only the start of a message is read: headers, the text and a delivery report all come before
# the attachments, and a 30 MB attachment must not cost 30 MB of parsing.
READ_LIMIT = 1 << 20

# Korean mail is often labelled EUC-KR (or ks_c_5601-1987) but uses the wider Windows code page
# cp949; decoding those as cp949 reads both. Unlabelled 8-bit text is tried in this order.
_CHARSET_ALIASES = {"euc-kr": "cp949", "ks_c_5601-1987": "cp949", "ks_c_5601": "cp949",
                    "x-windows-949": "cp949", "unknown-8bit": "utf-8", "x-unknown": "utf-8"}
_GUESSES = ("utf-8", "cp949", "iso-2022-jp")

_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_BARE_ID = re.compile(r"^[^<>\s@]+@[^<>\s@]+$")
_WHITESPACE = re.compile(r"\s+")
# Control characters, NUL above all: PostgreSQL refuses them in text and jsonb, so they must not
# reach an event.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TAG = re.compile(r"<[^>]*>")
_STYLE = re.compile(r"<(style|script)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
# Where the quoted original starts in a reply: "On … wrote:", Outlook's separator or header
# block, Korean clients' "… 작성:" line and "보낸 사람:" / "-----Original Message-----".
_QUOTE_START = re.compile(
    r"^(>|On .{4,200} wrote:\s*$|-{2,}\s*(Original Message|원본 메일|Forwarded message)"
    r"|From:\s|보낸 사람:|\S.{4,120}(작성|님이 작성):\s*$|________________)",
    re.IGNORECASE,
)

# Mobile clients' one-line signatures that the reply parser leaves (Korean phones write them in
# Korean: "iPhone에서 보냄", "Galaxy에서 보냄").
_DEVICE_SIGNATURE = re.compile(r"^(sent from my \S.*|\S+(에서 보냄|から送信)|sent from \S+ for \S+)$",
                               re.IGNORECASE)
# The languages the reply parser knows the quote headers and signatures of (it has no
# Portuguese; its English rules catch most Portuguese clients' "Em … escreveu:" only by luck).
_REPLY_LANGUAGES = ["en", "ko", "ja", "zh", "de", "fr", "es", "it", "nl"]
_REPLY_PARSER = EmailReplyParser(languages=_REPLY_LANGUAGES)


@dataclass(frozen=True)
class Mail:
    """What classification needs of a message."""

    message: Message  # the compat32 tree: the shape flufl.bounce reads
    key: str  # identifies the message across folders and rescans
    message_id: str | None
    sender: str  # the From address, lower case; "" when missing
    subject: str
    date: datetime | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    truncated: bool


def parse(raw: bytes) -> Mail:
    head = raw[:READ_LIMIT]
    message = message_from_bytes(head, policy=policy.compat32)
    message_id = next(iter(message_ids(header_text(message, "Message-ID"))), None)
    return Mail(
        message=message,
        key=message_id or content_key(raw),
        message_id=message_id,
        sender=sender_address(message),
        subject=header_text(message, "Subject"),
        date=_date(header_text(message, "Date")),
        in_reply_to=message_ids(header_text(message, "In-Reply-To")),
        references=message_ids(header_text(message, "References")),
        truncated=len(raw) > READ_LIMIT,
    )


def unreadable(raw: bytes) -> Mail:
    """A message nothing could be read from: no headers, only its identity."""
    return Mail(Message(), content_key(raw), None, "", "", None, (), (), len(raw) > READ_LIMIT)


def content_key(raw: bytes) -> str:
    """What identifies a message without a Message-ID: a hash of what was read of it."""
    return "sha256:" + hashlib.sha256(raw[:READ_LIMIT]).hexdigest()


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Text in the declared charset, else the first of a few common ones that fits, else with
    replacement characters: never an error."""
    for candidate in (_charset(charset), *_GUESSES):
        if candidate is None:
            continue
        try:
            return _CONTROL.sub("", data.decode(candidate))
        except (LookupError, UnicodeDecodeError):
            continue
    return _CONTROL.sub("", data.decode("utf-8", errors="replace"))


def _charset(name: str | None) -> str | None:
    if not name:
        return None
    name = name.strip().strip('"').lower()
    return _CHARSET_ALIASES.get(name, name)


def mime_problems(message: Message) -> tuple[str, ...]:
    """What is wrong with the message's structure, as rule ids: `broken-mime` (a boundary
    missing or never closed, a multipart without parts: what the parser had to guess) and
    `unknown-charset` (a part in a charset Python does not know: read by guessing)."""
    broken = unknown = False
    for part in message.walk():
        broken = broken or bool(part.defects)
        charset = _charset(part.get_content_charset())
        if charset and not unknown:
            try:
                codecs.lookup(charset)
            except LookupError:
                unknown = True
    return (*(["broken-mime"] if broken else []), *(["unknown-charset"] if unknown else []))


def header_text(message: Message, name: str) -> str:
    """A header's value as readable text: RFC 2047 words decoded, raw 8-bit bytes guessed."""
    # compat32 hands raw 8-bit header bytes over as a Header in the "unknown-8bit" charset;
    # decode_header gives those bytes back, to be decoded like any other
    value = message.get(name)
    if value is None:
        return ""
    try:
        chunks = decode_header(value)
    except Exception:  # malformed encoded words: keep the text as it came
        chunks = [(str(value), None)]
    text = "".join(
        decode_bytes(chunk, charset) if isinstance(chunk, bytes) else chunk
        for chunk, charset in chunks
    )
    return _WHITESPACE.sub(" ", _CONTROL.sub("", text)).strip()


def message_ids(value: str) -> tuple[str, ...]:
    """The `<id>` tokens of a Message-ID, In-Reply-To or References value, in order. A lone id
    without brackets (some clients drop them) counts as well."""
    found = tuple(_MESSAGE_ID.findall(value))
    if not found and _BARE_ID.match(value.strip()):
        return (f"<{value.strip()}>",)
    return found


def sender_address(message: Message) -> str:
    addresses = getaddresses([header_text(message, "From")])
    return next((address.lower() for _, address in addresses if "@" in address), "")


def _date(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def part_text(part: Message) -> str:
    """The decoded text of a leaf part (transfer encoding and charset), "" when there is none."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # a broken transfer encoding: nothing readable in this part
        return ""
    if not isinstance(payload, bytes):
        return ""
    return decode_bytes(payload, part.get_content_charset())


def body_text(message: Message) -> str:
    """The message's own text: its first text/plain part, else its first HTML part as text."""
    leaves = [p for p in _own_parts(message) if not _is_attachment(p)]
    for wanted in ("text/plain", "text/html"):
        for part in leaves:
            if part.get_content_type() == wanted:
                text = part_text(part)
                return html_to_text(text) if wanted == "text/html" else text
    return ""


def _own_parts(part: Message):
    """Leaf parts, not descending into attached messages (a bounce's copy of the original is
    not the bounce's text)."""
    if part.get_content_maintype() == "message":
        return
    if part.is_multipart():
        for child in part.get_payload():
            yield from _own_parts(child)
    else:
        yield part


def _is_attachment(part: Message) -> bool:
    return (part.get("Content-Disposition") or "").strip().lower().startswith("attachment")


def html_to_text(markup: str) -> str:
    text = _STYLE.sub(" ", markup)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</tr>", "\n", text)
    return html.unescape(_TAG.sub(" ", text))


def own_text(text: str) -> str:
    """What the person wrote in a reply: quoted history and signature removed by the reply
    parser (mail-parser-reply), then cut at the quote headers it does not know (Korean clients'
    "… 님이 작성:", Outlook's "From:" block in an HTML-only reply) and without a device
    signature line."""
    try:
        replies = _REPLY_PARSER.read(text.replace("\r\n", "\n")).replies
        own = replies[0].body if replies else text
    except Exception:  # a parser failure on odd text: the text as it came, cut below
        own = text
    lines = []
    for line in own.split("\n"):
        if _QUOTE_START.match(line.strip()):
            break
        if not _DEVICE_SIGNATURE.match(line.strip()):
            lines.append(line)
    return "\n".join(lines).strip()


def excerpt(text: str, limit: int = 300) -> str:
    """What the person wrote, without the quoted original, on one line."""
    own = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if _QUOTE_START.match(line.strip()):
            break
        own.append(line)
    flat = _WHITESPACE.sub(" ", " ".join(own)).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"
