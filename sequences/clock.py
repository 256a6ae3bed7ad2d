"""Time, read through one interface by every service.

Waits are days long, so tests and the dev stack move time instead of waiting: with
`SEQUENCES_CLOCK=adjustable` each process adds an offset kept in a NATS key-value bucket, and
`sequences clock advance 2d` moves every process of the system at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Protocol

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError

from contracts.subjects import CLOCK_BUCKET, CLOCK_OFFSET_KEY

log = logging.getLogger(__name__)


class Clock(Protocol):
    def now(self) -> datetime: ...

    async def wait_for_change(self, timeout: float) -> None:
        """Sleep up to `timeout` real seconds, waking early when time is moved."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def wait_for_change(self, timeout: float) -> None:
        await asyncio.sleep(timeout)


class FixedClock:
    """For unit tests of pure logic: time stands still until moved."""

    def __init__(self, start: datetime):
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta

    async def wait_for_change(self, timeout: float) -> None:
        await asyncio.sleep(timeout)


class AdjustableClock:
    """System time plus an offset shared by every process through a NATS KV bucket."""

    def __init__(self) -> None:
        self._offset = timedelta()
        self._changed = asyncio.Event()

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    async def wait_for_change(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass
        self._changed.clear()

    def _set_offset(self, seconds: float) -> None:
        self._offset = timedelta(seconds=seconds)
        self._changed.set()

    async def follow(self, js: JetStreamContext) -> None:
        """Apply every offset written to the bucket, until cancelled."""
        kv = await clock_bucket(js)
        watcher = await kv.watch(CLOCK_OFFSET_KEY)
        async for entry in watcher:
            if entry is None:  # end of the initial values
                continue
            if entry.value:
                self._set_offset(float(entry.value.decode()))
                log.info("clock moved: now %s", self.now().isoformat(timespec="seconds"))


async def clock_bucket(js: JetStreamContext):
    try:
        return await js.key_value(CLOCK_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(bucket=CLOCK_BUCKET, history=1)


async def read_offset(js: JetStreamContext) -> timedelta:
    kv = await clock_bucket(js)
    try:
        entry = await kv.get(CLOCK_OFFSET_KEY)
    except KeyNotFoundError:
        return timedelta()
    return timedelta(seconds=float(entry.value.decode())) if entry.value else timedelta()


async def advance(js: JetStreamContext, delta: timedelta) -> timedelta:
    """Move the shared clock forward by `delta`; returns the new total offset."""
    return await set_offset(js, await read_offset(js) + delta)


async def set_to(js: JetStreamContext, moment: datetime) -> timedelta:
    """Make every process's clock read `moment` now (tests jump to a DST change this way)."""
    return await set_offset(js, moment - datetime.now(UTC))


async def set_offset(js: JetStreamContext, offset: timedelta) -> timedelta:
    """Set the total offset. Unlike `advance`, repeating it after a lost answer (NATS
    restarting) moves nothing twice."""
    kv = await clock_bucket(js)
    await kv.put(CLOCK_OFFSET_KEY, str(offset.total_seconds()).encode())
    return offset


_DURATION = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>[smhd])$")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(value: str) -> timedelta:
    """`90s`, `15m`, `6h`, `2d`."""
    match = _DURATION.match(value.strip())
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 90s, 15m, 6h, 2d)")
    return timedelta(**{_UNIT[match["unit"]]: float(match["n"])})
