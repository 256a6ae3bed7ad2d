"""`sequences mail …`: what the thread-watcher makes of a message, and the dev mailbox.

    sequences mail classify FILE|DIR|- ... [--json]   what each message is, and why
    sequences mail drop-reply --latest            a reply to the newest captured email
    sequences mail drop-bounce --message-id ID    a bounce of that captured email (--soft)
    sequences mail drop-auto-reply --latest       an out-of-office answer

`classify` reads raw messages (files, the `*.eml` files and Maildir messages of a directory, or
standard input) and says per message what it is (bounce, auto-reply, reply, other), a bounce's
class, reason and rule (sequences/bounce_reasons.py), its failed recipient and the Message-ID of
ours it carries, a reply's intent and its rule (sequences/reply_intent.py), an auto-reply's
return date (sequences/out_of_office.py). It also matches against the sent messages in the database of DATABASE_URL when
it is set (read only), else it says that it could not. The drop commands write into the dev stack's
Maildir (`DATA_DIR/mailbox`), which its thread-watcher reads.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, Iterator

from sequences.clock import SystemClock
from sequences.db import create_engine
from sequences.devstack.capture import read_captured
from sequences.devstack.stack import captured_mail_dir, dev_mailbox_dir
from services.thread_watcher import devmail
from services.thread_watcher.domain import (
    Decision,
    SentMessage,
    Wanted,
    classification,
    decide,
    examine_raw,
)
from services.thread_watcher.maildir import deliver
from services.thread_watcher.repository import find_sent

_NO_DATABASE = ("DATABASE_URL is not set: nothing was matched against the messages we sent; "
                "set it to the system's database to see the enrollment")


@dataclass(frozen=True)
class Classified:
    """One message as the command reports it: what it is on its own (`classification`), then
    what the watcher would do with it (the decision, matched against our sent mail)."""

    source: str
    facts: dict[str, Any]
    decision: Decision
    note: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.source, **self.facts, "decision": self.decision.label,
                "watcher": self.decision.as_dict(), "note": self.note}


def classify(paths: list[str], as_json: bool) -> int:
    """Classify every message the paths name, one report each as it is read; 1 when a path
    could not be read or named no message."""
    return 1 if asyncio.run(report(paths, as_json)) else 0


async def report(paths: list[str], as_json: bool) -> bool:
    """Print the report on every message; True when something could not be read."""
    failed = seen = False
    last_note = None
    async with _lookup() as sent_for:
        for source, raw in _messages(paths):
            if raw is None:
                print(f"sequences mail classify: {source}", file=sys.stderr)
                failed = True
                continue
            seen = True
            examined = examine_raw(raw)
            sent, note = await sent_for(examined.wanted())
            classified = Classified(source, classification(examined), decide(examined, sent), note)
            print(json.dumps(classified.as_dict(), ensure_ascii=False) if as_json
                  else _describe(classified), flush=True)
            last_note = note
    if last_note and not as_json:  # once, not under every message
        print(f"note: {last_note}")
    return failed or not seen


@asynccontextmanager
async def _lookup():
    """How to find the sent messages a message names: in DATABASE_URL's database (one
    connection for every message), else nowhere, with a note saying so."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        async def nowhere(wanted: Wanted) -> tuple[list[SentMessage], str | None]:
            return [], _NO_DATABASE
        yield nowhere
        return
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            async def in_database(wanted: Wanted) -> tuple[list[SentMessage], str | None]:
                return await find_sent(conn, wanted), None
            yield in_database
    finally:
        await engine.dispose()


def _messages(paths: list[str]) -> Iterator[tuple[str, bytes | None]]:
    """(where, raw bytes) per message; (a problem, None) for a path that cannot be read."""
    for name in paths:
        if name == "-":
            yield "<stdin>", sys.stdin.buffer.read()
            continue
        path = Path(name)
        files = sorted(_message_files(path)) if path.is_dir() else [path]
        if not files:
            yield f"{name}: no *.eml file or Maildir message in this directory", None
        for file in files:
            try:
                yield str(file), file.read_bytes()
            except OSError as error:
                yield f"{file}: {error.strerror or error}", None


def _message_files(directory: Path) -> Iterator[Path]:
    """`*.eml` anywhere below, and the messages of Maildir folders (`cur/`, `new/`)."""
    for path in directory.rglob("*"):
        if path.is_file() and (path.suffix == ".eml" or path.parent.name in ("cur", "new")):
            yield path


def _describe(classified: Classified) -> str:
    facts, decision = classified.facts, classified.decision
    verdict = (f" {facts['class']} / {facts['reason']} (rule {facts['rule']})"
               if facts["class"] else "")
    lines = [f"{classified.source}: {facts['kind']}{verdict}"]
    if facts["kind"] == "bounce":
        lines.append(f"  recipient    {', '.join(facts['recipients']) or '? (none named)'}")
        lines.append(f"  original     {facts['original_message_id'] or '? (none found)'}")
    elif facts["rule"]:
        lines.append(f"  rule         {facts['rule']}")
    extra = {k: v for k, v in facts.items() if k not in _SHOWN and v not in (None, [], "")}
    lines += [f"  {key.replace('_', ' '):<12} {value}" for key, value in extra.items()]
    if facts["notes"]:
        lines.append(f"  notes        {', '.join(facts['notes'])}")
    lines.append(f"  watcher      {decision.label}")
    if decision.sent:
        lines.append(f"  enrollment   {decision.sent.enrollment_id} (our message "
                     f"{decision.sent.message_id}, matched by {decision.matched_by})")
    watched = decision.as_dict()
    for label, key in (("from", "sender"), ("subject", "subject"), ("message-id", "message_id"),
                       ("date", "date"), ("excerpt", "excerpt")):
        if watched[key]:
            lines.append(f"  {label:<12} {watched[key]}")
    return "\n".join([*lines, "  why:", *(f"    - {reason}" for reason in decision.reasons)])


# keys `_describe` shows in its own lines; any other (a status, an intent) gets a line of its own
_SHOWN = {"kind", "class", "reason", "rule", "recipients", "original_message_id", "notes"}

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
