"""An embedded PostgreSQL 16 (the pgserver wheel) for the dev stack and tests.

pgserver's lifecycle, as of 0.1.4, shapes this wrapper:

* ``get_server`` runs initdb on a fresh directory and ``pg_ctl start`` (a daemon that outlives
  this process unless stopped), listening only on a unix socket in the data directory.
* Handles are shared between processes: each process that calls ``get_server`` appends its pid
  to ``PGDATA/.handle_pids.json``, and ``cleanup()`` stops the server only when the caller is
  the last pid listed (with cleanup_mode ``"stop"``; ``None`` never stops it, ``"delete"`` also
  removes the data).
* Every handle registers an ``atexit`` hook that is never unregistered in ``"stop"`` mode.
* The location of its inter-process lock is computed from ``XDG_RUNTIME_DIR`` when pgserver is
  first imported.
* Run as root, it creates a ``pgserver`` system user to run PostgreSQL as, chowns the data
  directory to it and adds read/execute permission for everyone on every parent directory.
"""

from __future__ import annotations

import atexit
import json
import os
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote, urlsplit

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer


class EmbeddedPostgres:
    """A PostgreSQL server whose files live under ``data_dir``; data survives stop/start.

    Use one instance per data directory: it owns the server, and ``stop`` shuts it down.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        # initdb refuses a non-empty directory, so PGDATA is a child of data_dir rather than
        # data_dir itself, leaving room for the runtime directory next to it.
        self.pgdata = self.data_dir / "pgdata"
        self._server: PostgresServer | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("EmbeddedPostgres is not running; call start() first")
        return self._url

    def start(self) -> str:
        """Start the server (running initdb first if the data directory is new); return its URL."""
        if self._server is not None:
            raise RuntimeError(f"PostgreSQL in {self.pgdata} is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _ensure_runtime_dir(self.data_dir / "run")
        # Imported here, not at module level, so XDG_RUNTIME_DIR is set before pgserver reads it.
        import pgserver

        _forget_dead_handles(self.pgdata)
        # "stop" rather than None: if this process exits without calling stop(), pgserver's
        # atexit hook still shuts PostgreSQL down instead of leaving an orphaned daemon.
        self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        self._url = _sqlalchemy_url(self._server.get_uri())
        return self._url

    def stop(self) -> None:
        """Shut PostgreSQL down (``pg_ctl stop``, fast mode) and wait until it has exited."""
        server = self._server
        if server is None:
            return
        self._server = None
        self._url = None
        # Drop this handle's atexit hook so that repeated restarts do not pile them up.
        atexit.unregister(server._cleanup)
        server.cleanup()
        # PostgreSQL deletes postmaster.pid as the last step of shutting down. Checking the
        # process instead would mislead: the postmaster is a daemon reparented to PID 1, and
        # until PID 1 reaps it (over a second on some machines) it lingers as a zombie that
        # psutil still reports as running.
        if (self.pgdata / "postmaster.pid").exists():
            holders = json.loads((self.pgdata / ".handle_pids.json").read_text())
            raise RuntimeError(
                f"PostgreSQL in {self.pgdata} is still running: pgserver keeps it up while "
                f"other processes hold handles on it ({holders})"
            )

    def restart(self) -> str:
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _ensure_runtime_dir(path: Path) -> None:
    # Without XDG_RUNTIME_DIR, platformdirs warns on import and pgserver falls back to a shared
    # /tmp/runtime-<uid>. platformdirs accepts the directory only if it is ours and mode 0700.
    if "XDG_RUNTIME_DIR" in os.environ:
        return
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(path)


def _forget_dead_handles(pgdata: Path) -> None:
    # A process killed before its atexit hook ran (SIGKILL, a crashed test run) stays listed
    # as a handle holder forever, and pgserver would then never stop the server again.
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    pids: list[int] = json.loads(handles.read_text())
    alive = [pid for pid in pids if _process_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, but belongs to another user
        return True
    return True


def _sqlalchemy_url(libpq_uri: str) -> str:
    # pgserver gives "postgresql://postgres:@/postgres?host=<socket dir>"; SQLAlchemy needs the
    # driver named. Built by hand because SQLAlchemy's renderer percent-encodes every "/" in
    # the socket path, which is correct but unreadable in logs.
    uri = make_url(libpq_uri)
    socket_dir = quote(uri.normalized_query["host"][0], safe="/")
    return f"postgresql+psycopg://{uri.username}@/{uri.database}?host={socket_dir}"


def _connect(url: str) -> psycopg.Connection[Any]:
    # Autocommit: CREATE/DROP DATABASE cannot run inside a transaction block.
    sa_url = make_url(url)
    params: dict[str, Any] = {
        **sa_url.translate_connect_args(username="user", database="dbname"),
        **sa_url.query,
    }
    return psycopg.connect(autocommit=True, **params)


def create_database(url: str, name: str, template: str | None = None) -> str:
    """Create database ``name`` on the server ``url`` points at; return a URL for it.

    ``template`` copies an existing database (which must have no other connections), e.g. a
    migrated schema, which is much faster than migrating each new database.
    """
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with _connect(url) as conn:
        conn.execute(statement)
    # Swap only the path, so the URL keeps the caller's spelling of everything else.
    return urlsplit(url)._replace(path="/" + quote(name)).geturl()


def drop_database(url: str, name: str) -> None:
    """Drop database ``name`` if it exists, disconnecting anyone still connected to it."""
    with _connect(url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
