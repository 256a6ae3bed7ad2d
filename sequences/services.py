"""The six services, by name: where each one's entry point, migrations and projections live."""

from __future__ import annotations

import importlib
from types import ModuleType

SERVICES = ("enrollment", "scheduler", "mailer", "thread-watcher", "webhooks", "gateway")


def service_module(name: str) -> ModuleType:
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; one of {', '.join(SERVICES)}")
    return importlib.import_module(f"services.{name.replace('-', '_')}.app")


def all_migrations():
    """Every migration set, in dependency-free order (each service has its own schema)."""
    return tuple(
        m.MIGRATIONS for m in map(service_module, SERVICES) if hasattr(m, "MIGRATIONS")
    )


def all_projections():
    return tuple(p for m in map(service_module, SERVICES) for p in getattr(m, "PROJECTIONS", ()))
