"""Helpers shared by integration and end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 15.0,
                     interval: float = 0.05) -> T:
    """Poll `check` until it returns a truthy value (returned) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        await asyncio.sleep(interval)


def sequences_process(args: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
    """Run `sequences ARGS` as its own process (so it can be SIGKILLed like a real service)."""
    return subprocess.Popen(
        [sys.executable, "-m", "sequences.cli", *args],
        env={**os.environ, **env},
        **kwargs,
    )
