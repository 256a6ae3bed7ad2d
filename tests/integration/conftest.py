from __future__ import annotations

import uuid

import pytest

from sequences.bootstrap import EVENTLOG_MIGRATIONS
from sequences.clock import SystemClock
from sequences.db import create_engine, migrate
from sequences.devstack.postgres import create_database, drop_database
from sequences.eventlog.store import EventStore
from sequences.messaging.nats import connect, ensure_events_stream
from sequences.services import all_migrations

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(database_url):
    engine = create_engine(database_url)
    await migrate(engine, EVENTLOG_MIGRATIONS, *all_migrations())
    yield engine
    await engine.dispose()


@pytest.fixture
async def other_engine(postgres_server):
    """A second database, migrated: for handling the same events another way and comparing."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(create_database(postgres_server, name))
    await migrate(engine, EVENTLOG_MIGRATIONS, *all_migrations())
    yield engine
    await engine.dispose()
    drop_database(postgres_server, name)


@pytest.fixture
def store():
    return EventStore(SystemClock())


@pytest.fixture
async def js(nats_url):
    nc = await connect(nats_url, "tests")
    js = nc.jetstream()
    await ensure_events_stream(js)
    yield js
    await nc.close()
