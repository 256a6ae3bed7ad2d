"""PostgreSQL access: one async SQLAlchemy engine per process, and schema migrations.

Every service owns a PostgreSQL schema (`eventlog`, `enrollment`, `scheduler`, ...) whose tables
are created by numbered SQL files in its `migrations/` folder, applied on start under an advisory
lock so replicas starting together do not race.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

log = logging.getLogger(__name__)

_MIGRATION_LOCK = 0x5E9_0001  # any constant shared by every process of the system


def sqlalchemy_url(url: str) -> str:
    """Accept plain `postgresql://` URLs (as operators write them) and use the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The same database as a libpq conninfo URL (for raw psycopg connections: LISTEN, COPY)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    # No pre-ping (a round trip on every checkout): after a PostgreSQL restart, a dead pooled
    # connection fails once and is dropped; consumers redeliver and requests retry (rpc.py).
    return create_async_engine(sqlalchemy_url(url), pool_size=pool_size, max_overflow=pool_size)


@dataclass(frozen=True)
class Migrations:
    component: str
    directory: Path

    def files(self) -> list[tuple[int, Path]]:
        found = [(int(p.name.split("_", 1)[0]), p) for p in self.directory.glob("[0-9]*_*.sql")]
        return sorted(found)


async def migrate(engine: AsyncEngine, *components: Migrations) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        await conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS public.schema_migrations ("
                " component text NOT NULL, version integer NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now(),"
                " PRIMARY KEY (component, version))"
            )
        )
        for component in components:
            await _apply(conn, component)


async def _apply(conn: AsyncConnection, component: Migrations) -> None:
    rows = await conn.execute(
        text("SELECT version FROM public.schema_migrations WHERE component = :c"),
        {"c": component.component},
    )
    applied = {row.version for row in rows}
    for version, path in component.files():
        if version in applied:
            continue
        log.info("applying migration %s/%s", component.component, path.name)
        await conn.exec_driver_sql(path.read_text())
        await conn.execute(
            text("INSERT INTO public.schema_migrations (component, version) VALUES (:c, :v)"),
            {"c": component.component, "v": version},
        )
