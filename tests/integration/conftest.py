from __future__ import annotations

import pytest

from sequences.bootstrap import EVENTLOG_MIGRATIONS
from sequences.clock import SystemClock
from sequences.db import create_engine, migrate
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
def store():
    return EventStore(SystemClock())


@pytest.fixture
async def js(nats_url):
    nc = await connect(nats_url, "tests")
    js = nc.jetstream()
    await ensure_events_stream(js)
    yield js
    await nc.close()
