"""Configuration, read from environment variables only (documented in the README's table)."""

from __future__ import annotations

import os
from dataclasses import dataclass


class ConfigError(Exception):
    pass


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None or value == "":
        raise ConfigError(f"{name} is not set (see the README, 'Configuration')")
    return value


@dataclass(frozen=True)
class Settings:
    database_url: str
    nats_url: str
    smtp_url: str
    clock: str  # "system" or "adjustable" (tests and the dev stack)
    gateway_host: str
    gateway_port: int
    public_url: str
    scheduler_tick_seconds: float
    scheduler_max_rate: float
    nats_replicas: int
    log_level: str
    health_port: int | None  # /healthz and /readyz for probes (the gateway serves its own)
    # how long the relay remembers what JetStream acknowledged, to publish it again if a crash
    # of the machine took it: longer than nats-server's sync_interval (two minutes by default)
    relay_keep_seconds: float = 300.0
    # where the open pixel and click redirects point (a custom tracking domain that reaches the
    # gateway); empty: public_url
    tracking_url: str = ""

    @classmethod
    def from_env(cls) -> Settings:
        clock = os.environ.get("SEQUENCES_CLOCK", "system")
        if clock not in ("system", "adjustable"):
            raise ConfigError("SEQUENCES_CLOCK must be 'system' or 'adjustable'")
        port = int(os.environ.get("GATEWAY_PORT", "8080"))
        host = os.environ.get("GATEWAY_HOST", "127.0.0.1")
        return cls(
            database_url=_env("DATABASE_URL"),
            nats_url=_env("NATS_URL"),
            smtp_url=os.environ.get("SMTP_URL", "smtp://127.0.0.1:25"),
            clock=clock,
            gateway_host=host,
            gateway_port=port,
            public_url=os.environ.get("SEQUENCES_PUBLIC_URL", f"http://{host}:{port}"),
            scheduler_tick_seconds=float(os.environ.get("SCHEDULER_TICK_SECONDS", "0.5")),
            scheduler_max_rate=float(os.environ.get("SCHEDULER_MAX_RATE", "5000")),
            nats_replicas=int(os.environ.get("NATS_STREAM_REPLICAS", "1")),
            log_level=os.environ.get("LOG_LEVEL", "INFO"),
            health_port=int(os.environ["HEALTH_PORT"]) if os.environ.get("HEALTH_PORT") else None,
            relay_keep_seconds=float(os.environ.get("RELAY_KEEP_SECONDS", "300")),
            tracking_url=os.environ.get("SEQUENCES_TRACKING_URL", ""),
        )
