"""NATS connection, the events stream, and the header names the system uses."""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.errors import NoRespondersError
from nats.js.errors import NotFoundError, ServiceUnavailableError

from contracts.subjects import EVENTS_STREAM, EVENTS_SUBJECTS

log = logging.getLogger(__name__)

# JetStream drops a second message with the same id inside the duplicate window: the relay sets
# it to the event id, so a re-published event is stored once.
MSG_ID = "Nats-Msg-Id"
DUPLICATE_WINDOW_SECONDS = 15 * 60


async def connect(url: str, name: str, attempts: int = -1) -> Client:
    """Connect, and keep reconnecting forever: a NATS restart must not stop a service. A
    command (`attempts` 2) gives up instead, and says NATS_URL is wrong."""
    nc = Client()

    async def on_disconnect():
        if not nc.is_closed:  # closing on purpose is not worth a warning
            log.warning("NATS disconnected; reconnecting")

    async def on_reconnect():
        log.info("NATS reconnected")

    async def on_error(error: Exception):
        # a command's failed connection ends in one line of its own (`sequences.cli`)
        log.log(logging.WARNING if attempts < 0 else logging.DEBUG, "NATS error: %s", error)

    await nc.connect(
        servers=[server.strip() for server in url.split(",")],  # a cluster: several URLs
        name=name,
        max_reconnect_attempts=attempts,
        reconnect_time_wait=0.5,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        error_cb=on_error,
    )
    return nc


def events_stream_config(replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=EVENTS_STREAM,
        subjects=[EVENTS_SUBJECTS],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,  # kept, so other systems can replay from any point
        discard=DiscardPolicy.OLD,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        num_replicas=replicas,
    )


async def ensure_events_stream(js: JetStreamContext, replicas: int = 1,
                               retry_seconds: float = 5.0) -> None:
    """Create the events stream unless it exists. A server without JetStream (nats-server
    started without -js) is waited for, saying so, rather than failed on: nothing is published
    (the outbox keeps every event) until it has JetStream."""
    config = events_stream_config(replicas)
    while True:
        try:
            await js.stream_info(EVENTS_STREAM)
            return
        except NotFoundError:
            await js.add_stream(config)
            log.info("created JetStream stream %s", EVENTS_STREAM)
            return
        except (ServiceUnavailableError, NoRespondersError):
            log.error("NATS answers but has no JetStream (start nats-server with -js, or enable"
                      " jetstream in its config): waiting for it; nothing is published meanwhile")
            await asyncio.sleep(retry_seconds)
