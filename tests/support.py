"""Helpers shared by integration and end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")

# the workspace of events that tests append straight to the log
TEST_WORKSPACE = uuid.UUID("00000000-0000-4000-8000-00000000000a")


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


async def nothing_pending(database_url: str, enrollment_id: str) -> None:
    """Until the scheduler has no pending step for the enrollment: an ending (reply, stop,
    opt-out) reaches it a moment after the API shows it, and a test moving the clock must wait."""
    from sqlalchemy import text

    from sequences.db import create_engine

    async def settled():
        engine = create_engine(database_url, pool_size=1)
        async with engine.connect() as conn:
            pending = (await conn.execute(text(
                "SELECT count(*) FROM scheduler.due_steps WHERE enrollment_id = :e"
                " AND state IN ('pending', 'held')"), {"e": enrollment_id})).scalar_one()
        await engine.dispose()
        return pending == 0

    await eventually(settled)


async def web_client(stack, email: str | None = None, password: str | None = None,
                     language: str = "en"):
    """An HTTP client of the web app, signed in as the stack's dev user (or `email` /
    `password`): the sign-in form's CSRF token and its `seq_form` cookie, then the post. The
    session's CSRF token for later forms is `client.csrf` (from the page's `<meta>`)."""
    import re

    import httpx

    client = httpx.AsyncClient(base_url=stack.gateway_url, timeout=30.0,
                               headers={"Accept-Language": language})
    form = await client.get("/sign-in")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    signed_in = await client.post("/sign-in", data={
        "email": email or stack.workspace["user_email"],
        "password": password or stack.workspace["password"], "csrf_token": token, "next": "/"})
    if signed_in.status_code != 303:
        await client.aclose()
        raise AssertionError(f"sign-in refused: {signed_in.status_code}")
    page = await client.get("/campaigns")
    client.csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text).group(1)
    return client
