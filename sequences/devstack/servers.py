"""Where a running dev stack's servers are: `sequences up` writes them to its data directory,
and a command that needs DATABASE_URL or NATS_URL, run without them, takes them from there
(and says so)."""

from __future__ import annotations

import json
import os
from pathlib import Path

SERVERS_FILE = "servers.json"
SETTINGS = ("DATABASE_URL", "NATS_URL")


def data_dir() -> Path:
    return Path(os.environ.get("SEQUENCES_DATA_DIR", ".data"))


def running_stack(directory: Path | None = None) -> dict | None:
    """The servers of the dev stack whose data directory is `directory`, if it is running."""
    path = (directory or data_dir()) / SERVERS_FILE
    try:
        servers = json.loads(path.read_text())
        os.kill(int(servers["pid"]), 0)  # the stack's process is still there
    except (OSError, ValueError, KeyError):
        return None
    return servers


def use_running_stack(environ=os.environ) -> str | None:
    """Fill the unset DATABASE_URL / NATS_URL from a running dev stack; returns the line that
    says so, or None when nothing was taken."""
    missing = [name for name, value in zip(SETTINGS, (
        environ.get("DATABASE_URL"), environ.get("NATS_URL"))) if not value]
    if not missing:
        return None
    servers = running_stack()
    if servers is None:
        return None
    for name in missing:
        environ[name] = servers[name]
    return (f"using the running dev stack's servers from {data_dir()}/ ({', '.join(missing)}"
            " not set)")
