"""`sequences mail …`: what the thread-watcher makes of a message, and the dev mailbox.

    sequences mail classify FILE.eml [--json]     the decision on a raw message, and why
    sequences mail drop-reply --latest            a reply to the newest captured email
    sequences mail drop-bounce --message-id ID    a bounce of that captured email (--soft)
    sequences mail drop-auto-reply --latest       an out-of-office answer

`classify` matches against the sent messages in the database of DATABASE_URL when it is set
(read only), else it says that it could not. The drop commands write into the dev stack's
Maildir (`DATA_DIR/mailbox`), which its thread-watcher reads.
"""

from __future__ import annotations

import asyncio
import json
import os
from email.message import Message
from pathlib import Path

from sequences.clock import SystemClock
from sequences.db import create_engine
from sequences.devstack.capture import read_captured
from sequences.devstack.stack import captured_mail_dir, dev_mailbox_dir
from services.thread_watcher import devmail
from services.thread_watcher.domain import Decision, SentMessage, Wanted, decide, examine_raw
from services.thread_watcher.maildir import deliver
from services.thread_watcher.repository import find_sent

_NO_DATABASE = ("DATABASE_URL is not set: nothing was matched against the messages we sent; "
                "set it to the system's database to see the enrollment")


def classify(path: Path, as_json: bool) -> int:
    examined = examine_raw(path.read_bytes())
    sent, note = asyncio.run(_sent_messages(examined.wanted()))
    decision = decide(examined, sent)
    if as_json:
        print(json.dumps({"file": str(path), **decision.as_dict(), "note": note},
                         ensure_ascii=False, indent=2))
    else:
        print(_describe(path, decision, note))
    return 0


async def _sent_messages(wanted: Wanted) -> tuple[list[SentMessage], str | None]:
    url = os.environ.get("DATABASE_URL")
    if not url:
        return [], _NO_DATABASE
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return await find_sent(conn, wanted), None
    finally:
        await engine.dispose()


def _describe(path: Path, decision: Decision, note: str | None) -> str:
    facts = decision.as_dict()
    lines = [f"{path}: {decision.label}"]
    if decision.sent:
        lines.append(f"  enrollment   {decision.sent.enrollment_id} (our message "
                     f"{decision.sent.message_id}, matched by {decision.matched_by})")
    for label, key in (("from", "sender"), ("subject", "subject"), ("message-id", "message_id"),
                       ("date", "date"), ("auto-reply", "auto_reply"), ("excerpt", "excerpt")):
        if facts[key]:
            lines.append(f"  {label:<12} {facts[key]}")
    if bounce := facts["bounce"]:
        lines.append(f"  bounce       {bounce['kind']}, status {bounce['status'] or '?'}, "
                     f"recipients {', '.join(bounce['recipients']) or '?'}, original "
                     f"{bounce['original_message_id'] or '?'}")
        lines.append(f"  diagnostic   {bounce['diagnostic']}")
    lines += ["  why:", *(f"    - {reason}" for reason in decision.reasons)]
    return "\n".join(lines + ([f"  note: {note}"] if note else []))


_ANSWERS = {
    "reply": lambda original, now, args: devmail.reply_to(original, now, args.text),
    "bounce": lambda original, now, args: devmail.bounce_of(original, now, args.soft),
    "auto-reply": lambda original, now, args: devmail.auto_reply_to(original, now),
}


def drop(kind: str, args) -> int:
    """Write a `kind` answer to a captured email into the dev mailbox."""
    original = _captured(args.data_dir, args.message_id)
    if original is None:
        which = args.message_id or "any email"
        print(f"no captured email matches {which} in {captured_mail_dir(args.data_dir)}")
        return 1
    raw = _ANSWERS[kind](original, SystemClock().now(), args)
    path = deliver(dev_mailbox_dir(args.data_dir), raw)
    print(f"{kind} to {original['Message-ID']} ({original['To']}) dropped into {path}")
    return 0


def _captured(data_dir: Path, message_id: str | None) -> Message | None:
    captured = read_captured(captured_mail_dir(data_dir))
    if message_id is None:
        return captured[-1] if captured else None
    wanted = message_id.strip().strip("<>")
    return next((m for m in reversed(captured)
                 if str(m.get("Message-ID", "")).strip().strip("<>") == wanted), None)
