"""Reply latency: from a reply appended to the IMAP mailbox to its enrollment showing Replied in
the API, p50 and p99 over N replies, with IDLE and with polling. Target: p50 under 2 s with IDLE.

The whole system runs as in production, every service its own process (the dev stack's Stack,
on the benchmark's PostgreSQL), its thread-watcher reading a Dovecot mailbox. Replies are
appended one at a time, each once the previous one shows Replied, so the figure is the latency
of a reply, not of a queue: IMAP push or poll, examination, ReplyDetected through the outbox
relay and NATS to the enrollment service, EnrollmentReplied, the read model, the API.

    python -m bench --only reply_latency [--quick]
"""

from __future__ import annotations

import asyncio
import math
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import text

from bench import common
from bench.common import Result
from sequences.db import create_engine
from sequences.devstack.capture import read_captured
from sequences.devstack.dovecot import Dovecot
from sequences.devstack.stack import Stack, StackConfig
from services.thread_watcher.devmail import reply_to

POLL_SECONDS = 2.0  # the polling run's interval; the IDLE run polls only every minute
_SEQUENCE = {
    "name": "reply latency", "sender_name": "Bench", "sender_email": "bench@sales.example",
    "timezone": "UTC", "send_policy": {"mode": "as_soon_as_due"},
    "steps": [{"channel": "email", "wait_days": 0, "subject": "Quote", "body": "Hello"},
              {"channel": "email", "wait_days": 30, "body": "Any news?"}],
}


async def run(quick: bool) -> list[Result]:
    count = 12 if quick else 100  # quick: the polling half waits up to 2 s a reply
    with tempfile.TemporaryDirectory(prefix="sequences-bench-replies-") as temp:
        with Dovecot(Path(temp) / "dovecot") as dovecot, _stack(Path(temp), dovecot) as stack:
            async with stack.api_client() as api:
                enrollments = await _enrolled(stack, api, 2 * count)
                idle = await _measure(stack, api, dovecot, enrollments[:count], "IDLE")
                _watch_by_polling(stack, dovecot)
                await _until_polling(api)
                polling = await _measure(stack, api, dovecot, enrollments[count:], "polling",
                                         jitter=POLL_SECONDS)
    return [*_figures("IDLE", idle, target=2.0),
            *_figures(f"polling every {POLL_SECONDS:g} s", polling)]


def _stack(data_dir: Path, dovecot: Dovecot) -> Stack:
    return Stack(StackConfig(
        data_dir=data_dir / "stack", gateway_port=0, nats_port=0, smtp_port=0,
        mail_viewer_port=0, log_to_files=True, database_url=common.fresh_database("replies"),
        service_env={"thread-watcher": {"WATCH_MAILBOXES": dovecot.url_for(dovecot.user),
                                        "WATCH_POLL_SECONDS": "60"}},
    ))


def _watch_by_polling(stack: Stack, dovecot: Dovecot) -> None:
    stack.kill_service("thread-watcher")
    stack.start_service("thread-watcher", extra_env={
        "WATCH_MAILBOXES": dovecot.url_for(dovecot.user, "?idle=0"),
        "WATCH_POLL_SECONDS": str(POLL_SECONDS)})


async def _until_polling(api: httpx.AsyncClient) -> None:
    while True:
        response = await api.get("/v1/mailboxes/health")  # 503 until the watcher answers
        if response.status_code == 200 and [(h["state"], h["idle"]) for h in response.json()] \
                == [("watching", False)]:
            return
        await asyncio.sleep(0.2)


async def _enrolled(stack: Stack, api: httpx.AsyncClient, count: int) -> list[tuple[str, str]]:
    """`count` active enrollments whose first email went out and is known to the watcher;
    returns (enrollment id, contact address)."""
    common.progress(f"  enrolling {count} contacts")
    sequence_id = (await api.post("/v1/sequences", json=_SEQUENCE)).json()["id"]
    enrollments = []
    for _ in range(count):
        email = f"c{uuid.uuid4().hex[:10]}@customer.example"
        contact = (await api.post("/v1/contacts", json={"name": "Kim", "email": email})).json()
        enrolled = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                                  json={"contact_id": contact["id"]})
        enrollments.append((enrolled.json()["id"], email))
    engine = create_engine(stack.database_url, pool_size=1)
    try:
        while await _known(engine) < count:
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()
    return enrollments


async def _known(engine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(text("SELECT count(*) FROM watcher.sent_messages"))).scalar()


async def _measure(stack: Stack, api: httpx.AsyncClient, dovecot: Dovecot,
                   enrollments: list[tuple[str, str]], mode: str,
                   jitter: float = 0.0) -> list[float]:
    """Latency of each reply, appended once the previous one shows Replied. With polling, a
    random pause first: else every reply would arrive just after a poll, and wait a whole
    interval for the next one."""
    first_email = {m["To"]: m for m in read_captured(stack.mail_dir)}
    ticker = common.Ticker(f"replies ({mode})", len(enrollments), unit="replies")
    latencies = []
    for done, (enrollment_id, email) in enumerate(enrollments):
        await asyncio.sleep(random.uniform(0, jitter))
        reply = reply_to(first_email[email], datetime.now(UTC))
        await asyncio.to_thread(dovecot.append, dovecot.user, reply)
        appended = time.perf_counter()
        while (await api.get(f"/v1/enrollments/{enrollment_id}")).json()["status"] != "replied":
            await asyncio.sleep(0.01)
        latencies.append(time.perf_counter() - appended)
        ticker.tick(done + 1)
    return latencies


def _percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q% of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _figures(mode: str, latencies: list[float], target: float | None = None) -> list[Result]:
    details = {"replies": len(latencies), "min_s": round(min(latencies), 3),
               "max_s": round(max(latencies), 3)}
    p50, p99 = _percentile(latencies, 50), _percentile(latencies, 99)
    median = Result(f"reply -> Replied, {mode}, p50", p50, "s", details=details)
    if target is not None:
        median.target, median.passed = f"< {target:g} s", p50 < target
    return [median, Result(f"reply -> Replied, {mode}, p99", p99, "s", details=details)]
