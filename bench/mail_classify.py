"""Classifying mail: `sequences mail classify --json` over the whole fixture corpus
(tests/fixtures/mail, 230-odd bounces, auto-replies and replies), in one process, messages/s:
files read, examined, classified, one JSON line each written (to memory). Against a raw
baseline in the same run: reading the same files and only parsing them with
`email.message_from_bytes`. A second figure times the rule table alone
(`sequences.bounce_reasons.classify`) over the status and diagnostic of every bounce.

No DATABASE_URL lookups: the command runs as it does without one.

    python -m bench --only mail_classify [--quick]
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from email import message_from_bytes, policy
from pathlib import Path
from unittest import mock

from bench.common import Result, progress
from sequences.bounce_reasons import classify
from services.thread_watcher import commands
from services.thread_watcher.domain import examine_raw

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "mail"


async def run(quick: bool) -> list[Result]:
    files = sorted(CORPUS.rglob("*.eml"))
    rounds = 3 if quick else 20
    progress(f"mail_classify: {len(files)} messages, {rounds} rounds each")
    raw = await _rate(len(files), rounds, _parse_only, files)
    with mock.patch.dict(os.environ), contextlib.redirect_stdout(io.StringIO()) as out:
        os.environ.pop("DATABASE_URL", None)
        command = await _rate(len(files), rounds, _command, out)
    bounces = [e.bounce for e in (examine_raw(f.read_bytes()) for f in files) if e.bounce]
    table = await _rate(len(bounces), rounds * 5, _table, bounces)
    return [
        Result.compare("sequences mail classify --json, the whole corpus", command,
                       "messages/s", raw, "read + email.message_from_bytes only",
                       min_ratio=0.05, details={"messages": len(files), "rounds": rounds}),
        Result.compare("the rule table alone (classify), per bounce", table, "bounces/s",
                       raw, "read + email.message_from_bytes only",
                       details={"bounces": len(bounces)}),
    ]


async def _parse_only(files: list[Path]) -> None:
    for file in files:
        message_from_bytes(file.read_bytes(), policy=policy.compat32)


async def _command(out: io.StringIO) -> None:
    out.seek(0)
    out.truncate()
    assert not await commands.report([str(CORPUS)], as_json=True)


async def _table(bounces: list) -> None:
    for bounce in bounces:
        classify(bounce.status, bounce.diagnostic)


async def _rate(count: int, rounds: int, work, arg) -> float:
    await work(arg)  # warm up: regular expressions compiled, modules imported, files cached
    started = time.perf_counter()
    for _ in range(rounds):
        await work(arg)
    return rounds * count / (time.perf_counter() - started)
