"""Every NATS name the system uses: streams, subjects, consumers, buckets.

Other systems subscribe to these, so they are part of the public contract. Nothing outside
contracts/ spells a subject string.
"""

from __future__ import annotations

# One JetStream stream carries every event; subjects are `seq.events.<category>.<EventType>`,
# where the category is the kind of event stream the event was appended to (enrollment, ...).
EVENTS_STREAM = "SEQUENCES_EVENTS"
EVENTS_ROOT = "seq.events"
EVENTS_SUBJECTS = f"{EVENTS_ROOT}.>"
# a filter no event matches: a durable consumer with nothing to read for now (the webhooks'
# feed while no webhook is registered)
NO_EVENTS_SUBJECT = f"{EVENTS_ROOT}.none.None"

# Commands and queries are request/reply over core NATS, served by a queue group per service.
COMMANDS_ROOT = "seq.commands"
QUERIES_ROOT = "seq.queries"

# Key-value bucket of the gateway's Idempotency-Key responses (kept a day).
IDEMPOTENCY_BUCKET = "SEQUENCES_IDEMPOTENCY"

# The web app's CSV imports, readable by any gateway replica: the uploaded files between the
# mapping step and the import (an object store), and each import's progress and report (a
# key-value bucket). Both expire: they are working copies, not business state.
IMPORT_FILES_BUCKET = "SEQUENCES_WEB_IMPORT_FILES"
IMPORT_PROGRESS_BUCKET = "SEQUENCES_WEB_IMPORTS"

# Key-value bucket holding the offset of the adjustable clock (tests and the dev stack only).
CLOCK_BUCKET = "SEQUENCES_CLOCK"
CLOCK_OFFSET_KEY = "offset_seconds"


def event_subject(category: str, event_type: str) -> str:
    return f"{EVENTS_ROOT}.{category}.{event_type}"


def category_subjects(category: str) -> str:
    """Every event of every stream of one category (what a consumer filters on)."""
    return f"{EVENTS_ROOT}.{category}.>"


def command_subject(service: str, command: str) -> str:
    return f"{COMMANDS_ROOT}.{service}.{command}"


def query_subject(service: str, query: str) -> str:
    return f"{QUERIES_ROOT}.{service}.{query}"


def service_queue(service: str) -> str:
    """Queue group: replicas of one service share requests."""
    return f"sequences-{service}"


def durable_consumer(service: str, purpose: str) -> str:
    return f"{service}-{purpose}"
