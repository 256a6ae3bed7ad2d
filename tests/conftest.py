"""Real parts for the tests: PostgreSQL, NATS JetStream and an SMTP capture server.

Each fixture takes, in order: an address from the environment (DATABASE_URL, NATS_URL,
SMTP_URL), else the embedded part (pgserver, the nats-server wheel, aiosmtpd), else a
testcontainers container where a Docker engine runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from sequences.devstack.nats_server import NatsServer
from sequences.devstack.ports import free_port
from sequences.devstack.postgres import EmbeddedPostgres, create_database, drop_database


def _docker_runs() -> bool:
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run(
        [docker, "info"], capture_output=True, timeout=10
    ).returncode == 0


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """URL of a PostgreSQL server whose `postgres` database may create databases."""
    if url := os.environ.get("DATABASE_URL"):
        yield url
        return
    try:
        server = EmbeddedPostgres(tmp_path_factory.mktemp("postgres"))
        yield server.start()
        server.stop()
    except ImportError:
        if not _docker_runs():
            raise
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver="psycopg") as container:
            yield container.get_connection_url()


@pytest.fixture
def database_url(postgres_server):
    """A fresh, empty database for one test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    url = create_database(postgres_server, name)
    yield url
    drop_database(postgres_server, name)


@pytest.fixture
def nats_server(tmp_path):
    """A NATS server with JetStream, new for each test (it starts in milliseconds)."""
    if os.environ.get("NATS_URL"):
        pytest.skip("tests that restart NATS need the embedded server")
    server = NatsServer(tmp_path / "nats", free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def nats_url(tmp_path):
    if url := os.environ.get("NATS_URL"):
        await _purge(url)
        yield url
        return
    server = NatsServer(tmp_path / "nats", free_port())
    yield server.start()
    server.stop()


async def _purge(url: str) -> None:
    """A shared NATS from the environment: start each test from an empty events stream."""
    from nats.js.errors import NotFoundError

    from contracts.subjects import CLOCK_BUCKET, EVENTS_STREAM
    from sequences.messaging.nats import connect

    nc = await connect(url, "tests")
    js = nc.jetstream()
    for stream in (EVENTS_STREAM, f"KV_{CLOCK_BUCKET}"):
        try:
            await js.delete_stream(stream)
        except NotFoundError:
            pass
    await nc.close()


@pytest.fixture(scope="session")
def shared_stack(tmp_path_factory):
    """The whole system, every service its own process, started once for the run: the browser
    tests and the end-to-end modules that need no settings of their own share it, each module
    in a workspace of its own (`stack` in tests/e2e and tests/browser)."""
    from sequences.devstack.stack import Stack
    from tests.support import stack_config

    with Stack(stack_config(tmp_path_factory)) as running:
        yield running


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
