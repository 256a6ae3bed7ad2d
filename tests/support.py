"""Helpers shared by integration and end-to-end tests."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from typing import Awaitable, Callable, TypeVar

from sequences.devstack import stack as stack_module
from sequences.devstack.stack import Stack, StackConfig

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


def stack_config(tmp_path_factory, **overrides) -> StackConfig:
    """The whole system for a test module (end-to-end and browser tests): free ports, logs in
    files, and the servers of DATABASE_URL / NATS_URL when the environment names them."""
    return StackConfig(
        data_dir=tmp_path_factory.mktemp("stack"),
        gateway_port=0, nats_port=0, smtp_port=0, mail_viewer_port=0,
        log_to_files=True,
        database_url=os.environ.get("DATABASE_URL"),
        nats_url=os.environ.get("NATS_URL"),
        **overrides,
    )


def create_workspace(stack: Stack, name: str, email: str, user_name: str = "") -> dict:
    """A new workspace in the stack, as `sequences admin create-workspace --json` makes it (its
    id, the first user's email and password, an API key), made here: the command's own process
    took 3 to 12 s to start on a busy machine. Safe from any test or fixture: it runs on an
    event loop of its own, in a thread of its own."""
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, _workspace(stack.database_url, name, email,
                                                     user_name)).result()


async def _workspace(database_url: str, name: str, email: str, user_name: str) -> dict:
    from services.gateway import accounts, sign_in

    from sequences.db import create_engine

    engine = create_engine(database_url, pool_size=1)
    password = secrets.token_urlsafe(12)
    try:
        async with engine.begin() as conn:
            workspace, key = await accounts.create_workspace(conn, name, email, user_name)
            await sign_in.set_password(conn, workspace.user.user_id, password)
    finally:
        await engine.dispose()
    return {"workspace_id": str(workspace.workspace_id), "user_id": str(workspace.user.user_id),
            "user_email": workspace.user.email, "api_key": key.key, "password": password}


def in_own_workspace(stack: Stack, module: str) -> Stack:
    """The session's shared stack as one test module sees it: the same processes, servers and
    clock, but a workspace (user, password, key) of the module's own, so what other modules
    made is not in its lists and theirs are not in its. Starting a stack per module cost about
    15 s each; a workspace is a few rows. Modules that need private settings, replicas or a
    clock of their own still start a `Stack` themselves."""
    slug = re.sub(r"[^a-z0-9]+", "-", module.rsplit(".", 1)[-1].lower()).strip("-")
    view = copy.copy(stack)  # (shares the processes; never stopped through the view)
    # (named as the dev stack's user: "You", whom the builder proposes as the sender)
    view.workspace = create_workspace(stack, f"Tests {slug}", f"you+{slug}@example.com", "You")
    return view


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


# --- the web app ------------------------------------------------------------------------------

csrf_token_in = stack_module.csrf_token_in  # (tests import it from here)


@contextlib.asynccontextmanager
async def web_client(stack, email: str | None = None, password: str | None = None,
                     language: str = "en"):
    """A browser-like HTTP client signed in to the app (the dev workspace's user by default):
    `async with web_client(stack) as browser: ...`. `browser.csrf` is the session's token, for
    posting forms: `await browser.post(url, data={"csrf_token": browser.csrf, ...})`."""
    client = await stack.web_session(email, password, language)
    try:  # (not `async with`: httpx refuses to open a client that has sent requests already)
        yield client
    finally:
        await client.aclose()

async def drop_reply(stack, message_id: str, text: str) -> str:
    """A customer's answer to a captured email, dropped into the dev stack's mailbox (what
    `sequences mail drop-reply` does for a person trying the app); returns its output."""
    dropped = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sequences.cli", "mail", "drop-reply", "--message-id",
        message_id, "--text", text, "--data-dir", str(stack.config.data_dir),
        stdout=asyncio.subprocess.PIPE)
    output, _ = await dropped.communicate()
    assert dropped.returncode == 0, output.decode()
    return output.decode()


async def rebuild_projections(stack) -> str:
    """`sequences projections rebuild` against the stack; returns its progress output."""
    rebuild = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sequences.cli", "projections", "rebuild",
        env={**os.environ, **stack.env()}, stderr=asyncio.subprocess.PIPE)
    _, progress = await rebuild.communicate()
    assert rebuild.returncode == 0, progress.decode()
    return progress.decode()
