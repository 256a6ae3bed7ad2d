"""Clicks of tracked links, recorded in batches after their redirects were answered.

`/c/<token>` verifies the token's signature in the gateway and answers 302 at once; the click
waits here, in a bounded in-memory queue, and goes to the mailer with the others of the last
moments as one `RecordEmailClicks` per workspace: when `MAX_BATCH` clicks are waiting or
`MAX_WAIT` seconds after the first, whichever comes first. One NATS round trip and one mailer
transaction per batch instead of per click.

At-least-once to the mailer: a batch whose send fails (a timeout, a lost connection, the mailer
restarting) is sent again, up to `ATTEMPTS` times with backoff, with the same click ids, so a
batch that did arrive but whose answer was lost is recorded once (mailer.clicks.click_id).
A refusal is not sent again.

What can be lost, by design (a click is a statistic, not an order; the reader got their
redirect either way): the clicks still in the queue when the gateway process dies without
shutting down (at most `MAX_WAIT` seconds' worth, plus any batch in retry); a clean shutdown
sends what is waiting first. Clicks beyond `CAPACITY` waiting at once (the mailer down for
long under a scanner's burst) are dropped and logged rather than growing the gateway's
memory."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Awaitable, Callable

from contracts import commands as c
from services.gateway.bus import ProblemError

log = logging.getLogger(__name__)

MAX_BATCH = 200
MAX_WAIT = 0.05  # seconds from a batch's first click to its send
CAPACITY = 20_000  # clicks waiting at most
ATTEMPTS = 5  # a batch the mailer did not answer gets 1 + 2 + 4 + 8 s more


@dataclass(frozen=True)
class _Waiting:
    workspace_id: uuid.UUID
    click: c.SeenClick  # its age (`seconds_ago`) set when its batch is sent
    seen: float  # time.monotonic() when the redirect was answered


Send = Callable[[c.RecordEmailClicks], Awaitable[object]]


class ClickBatcher:
    def __init__(self, send: Send, *, max_batch: int = MAX_BATCH, max_wait: float = MAX_WAIT,
                 capacity: int = CAPACITY, attempts: int = ATTEMPTS, backoff: float = 1.0):
        self._send, self._max_batch, self._max_wait = send, max_batch, max_wait
        self._attempts, self._backoff = attempts, backoff
        self._queue: asyncio.Queue[_Waiting] = asyncio.Queue(maxsize=capacity)
        self._runner: asyncio.Task | None = None
        self._retries: set[asyncio.Task] = set()
        self.dropped = 0

    def add(self, workspace_id: uuid.UUID, click: c.SeenClick) -> bool:
        """Queue one click (never waits); False when the queue is full and it was dropped."""
        try:
            self._queue.put_nowait(_Waiting(workspace_id, click, time.monotonic()))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("click of enrollment %s dropped: %d clicks wait already",
                        click.enrollment_id, self._queue.qsize())
            return False
        return True

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="click-batches")

    async def close(self) -> None:
        """Send what is waiting (a clean shutdown loses no click), then stop."""
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except asyncio.CancelledError:
                pass
        while not self._queue.empty():
            await self._flush(self._take_waiting(), retry_later=False)
        if self._retries:
            await asyncio.gather(*self._retries, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self._max_wait
            while len(batch) < self._max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:
                    break
            await self._flush(batch, retry_later=True)

    def _take_waiting(self) -> list[_Waiting]:
        batch = []
        while not self._queue.empty() and len(batch) < self._max_batch:
            batch.append(self._queue.get_nowait())
        return batch

    async def _flush(self, batch: list[_Waiting], retry_later: bool) -> None:
        by_workspace: dict[uuid.UUID, list[_Waiting]] = defaultdict(list)
        for waiting in batch:
            by_workspace[waiting.workspace_id].append(waiting)
        for workspace_id, clicks in by_workspace.items():
            if await self._try(workspace_id, clicks):
                continue
            if not retry_later:  # shutting down: the retries are awaited here
                await self._retry(workspace_id, clicks)
                continue
            # tried again aside: the next batches do not wait behind a mailer that is away
            task = asyncio.create_task(self._retry(workspace_id, clicks))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)

    async def _try(self, workspace_id: uuid.UUID, clicks: list[_Waiting]) -> bool:
        """True when done with these clicks (recorded, or refused: not sent again)."""
        now = time.monotonic()
        command = c.RecordEmailClicks(workspace_id=workspace_id, clicks=[
            w.click.model_copy(update={"seconds_ago": min(max(now - w.seen, 0.0), 86_400.0)})
            for w in clicks])
        try:
            await self._send(command)
        except ProblemError:
            log.exception("%d clicks of workspace %s were refused", len(clicks), workspace_id)
        except Exception:
            return False
        return True

    async def _retry(self, workspace_id: uuid.UUID, clicks: list[_Waiting]) -> None:
        for attempt in range(1, self._attempts):
            await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
            if await self._try(workspace_id, clicks):
                return
        log.error("%d clicks of workspace %s were not recorded", len(clicks), workspace_id)
