"""Migration 0120 on a database that had webhooks before Standard Webhooks: each secret of
before becomes the same key in `whsec_` form (its deprecated signature does not change), and
those webhooks keep the deprecated headers, which new ones do not get."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from contracts.webhooks import signature, signing_key
from sequences.db import Migrations, create_engine, migrate
from services.webhooks.app import MIGRATIONS

pytestmark = pytest.mark.integration
OLD_SECRET = "whsec_Zm9v-YmFy_bXlzZWNyZXQtb2YtYmVmb3JlLXRoZS1jaGFuZ2U"  # token_urlsafe form


async def test_a_secret_of_before_is_the_same_key_and_keeps_the_deprecated_headers(
        database_url, tmp_path):
    before = tmp_path / "migrations"
    before.mkdir()
    shutil.copy(MIGRATIONS.directory / "0001_webhooks.sql", before)
    engine = create_engine(database_url, pool_size=1)
    try:
        await migrate(engine, Migrations(MIGRATIONS.component, before))
        async with engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO webhooks.webhooks (webhook_id, workspace_id, url, event_types,"
                " secret, created_at) VALUES (:id, :ws, 'https://example.com/h', '{*}',"
                " :secret, :at)"), {"id": uuid.uuid4(), "ws": uuid.uuid4(),
                                    "secret": OLD_SECRET, "at": datetime.now(UTC)})
        await migrate(engine, MIGRATIONS)
        async with engine.begin() as conn:
            row = (await conn.execute(text(
                "SELECT secret, legacy_headers FROM webhooks.webhooks"))).one()
            await conn.execute(text(
                "INSERT INTO webhooks.webhooks (webhook_id, workspace_id, url, event_types,"
                " secret, created_at) VALUES (:id, :ws, 'https://example.com/n', '{*}',"
                " 'whsec_new', now())"), {"id": uuid.uuid4(), "ws": uuid.uuid4()})
            new = (await conn.execute(text(
                "SELECT legacy_headers FROM webhooks.webhooks WHERE secret = 'whsec_new'"))
                   ).scalar_one()
    finally:
        await engine.dispose()
    assert row.legacy_headers is True and new is False
    assert signing_key(row.secret) == OLD_SECRET.encode()
    body = b'{"event_id": "x"}'
    old_way = signature(OLD_SECRET.encode(), 1_795_000_000, body)  # what receivers verified
    assert signature(signing_key(row.secret), 1_795_000_000, body) == old_way
