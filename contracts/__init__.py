"""The public language of Sequences: events, commands, queries, views and their NATS names."""

from contracts import events as events  # noqa: F401  (registers every event type)
