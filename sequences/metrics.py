"""OpenTelemetry metrics: one meter provider per process, read as Prometheus text at `/metrics`
(the health port; the gateway serves its own) and pushed over OTLP when it is configured.

Every instrument of the system is made here, so `METRIC_NAMES` (what dashboards and alert
rules may use, checked by a test) cannot drift from the code. Semantic-convention names where
OpenTelemetry has one (`messaging.client.consumed.messages`, `http.server.request.duration`);
the rest are `sequences.*`. Figures that are a state (lag, backlogs) are observable gauges read
from what a `Sampler` found last, as a scrape cannot wait for NATS or PostgreSQL.

`SEQUENCES_METRICS=off` turns metrics off (the API's no-op meter stays in place).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Awaitable, Callable, Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

log = logging.getLogger(__name__)

_meter = metrics.get_meter("sequences")

# seconds: from a few milliseconds (an SMTP command) to hours (a scheduler that was down)
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900,
            3600)

# --- counters and histograms, recorded where things happen --------------------------------
consumed = _meter.create_counter(
    "messaging.client.consumed.messages", unit="{message}",
    description="Events a durable consumer handled (messaging.consumer.group.name).")
handler_failures = _meter.create_counter(
    "sequences.consumer.failures", unit="{event}",
    description="Handler failures of a durable consumer (the event is retried).")
step_lateness = _meter.create_histogram(
    "sequences.step.lateness", unit="s", explicit_bucket_boundaries_advisory=_SECONDS,
    description="How long after its due moment a step fired (StepDue appended).")
step_due_to_sent = _meter.create_histogram(
    "sequences.step_due_to_sent.duration", unit="s",
    explicit_bucket_boundaries_advisory=_SECONDS,
    description="From a step's StepDue to its EmailSent.")
emails = _meter.create_counter(
    "sequences.emails", unit="{email}",
    description="Emails by outcome (sent, held, failed, deferred, bounced), mailbox and reason.")
smtp_duration = _meter.create_histogram(
    "sequences.smtp.operation.duration", unit="s", explicit_bucket_boundaries_advisory=_SECONDS,
    description="SMTP operations (send), with error.type when they failed.")
imap_duration = _meter.create_histogram(
    "sequences.imap.operation.duration", unit="s", explicit_bucket_boundaries_advisory=_SECONDS,
    description="IMAP operations (connect, fetch, idle), with error.type when they failed.")
tracked_clicks = _meter.create_counter(
    "sequences.tracking.clicks", unit="{click}",
    description="Tracked-link requests at the gateway by outcome (redirected, gone: a bad"
                " token; dropped: redirected, but the click queue was full).")
inbound = _meter.create_counter(
    "sequences.inbound.messages", unit="{message}",
    description="Messages the thread-watcher examined, by decision (reply, auto_reply, bounce,"
                " unrelated); replies per minute on the Overview dashboard.")
webhook_deliveries = _meter.create_counter(
    "sequences.webhook.deliveries", unit="{delivery}",
    description="Webhook delivery attempts by result (delivered, failed, retrying).")

# --- gauges, from the last sample ------------------------------------------------------------
# name -> the observations the last sample found (attributes as a tuple of pairs -> value)
_latest: dict[str, dict[tuple, float]] = {}

GAUGES = {
    "sequences.consumer.pending": ("{message}", "Events a durable consumer has not handled yet."),
    "sequences.consumer.oldest_pending_age": (
        "s", "Age of the oldest event a durable consumer has not handled (its lag)."),
    "sequences.outbox.depth": ("{event}", "Committed events not yet published to JetStream."),
    "sequences.outbox.oldest_age": ("s", "Age of the oldest unpublished event (publish lag)."),
    "sequences.due_steps.pending": ("{step}", "Steps planned and not fired yet."),
    "sequences.due_steps.late": ("{step}", "Steps whose moment has come but have not fired."),
    "sequences.due_steps.oldest_late_age": (
        "s", "How long the oldest due-but-not-fired step has been due."),
    "sequences.webhook.pending": ("{delivery}", "Webhook deliveries not yet delivered."),
    "sequences.webhook.oldest_pending_age": ("s", "Age of the oldest pending webhook delivery."),
    "sequences.mailbox.sent": (
        "{email}", "What a connected mailbox sent this day / hour (window), against its limit."),
    "sequences.mailbox.limit": (
        "{email}", "A connected mailbox's cap for the day (after warm-up) / hour (window)."),
}


def _observe(name: str):
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(value, dict(attributes))
                for attributes, value in _latest.get(name, {}).items()]
    return callback


for _name, (_unit, _description) in GAUGES.items():
    _meter.create_observable_gauge(_name, callbacks=[_observe(_name)], unit=_unit,
                                   description=_description)

# Prometheus names of everything above (counters get _total, seconds _seconds); the FastAPI
# instrumentation's http.server.request.duration is made by that library
METRIC_NAMES = frozenset({
    "messaging_client_consumed_messages_total", "sequences_consumer_failures_total",
    "sequences_step_lateness_seconds", "sequences_step_due_to_sent_duration_seconds",
    "sequences_emails_total", "sequences_smtp_operation_duration_seconds",
    "sequences_imap_operation_duration_seconds", "sequences_webhook_deliveries_total",
    "sequences_inbound_messages_total", "sequences_tracking_clicks_total",
    "sequences_consumer_pending", "sequences_consumer_oldest_pending_age_seconds",
    "sequences_outbox_depth", "sequences_outbox_oldest_age_seconds",
    "sequences_due_steps_pending", "sequences_due_steps_late",
    "sequences_due_steps_oldest_late_age_seconds", "sequences_webhook_pending",
    "sequences_webhook_oldest_pending_age_seconds", "sequences_mailbox_sent",
    "sequences_mailbox_limit", "http_server_request_duration_seconds",
})

# what a sample source returns: (gauge name, attributes, value)
Sample = tuple[str, dict, float]
SampleSource = Callable[[], Awaitable[list[Sample]]]


def enabled() -> bool:
    return os.environ.get("SEQUENCES_METRICS", "on").lower() not in ("off", "0", "false", "no")


def setup_metrics(service_name: str) -> bool:
    """The process's meter provider: a Prometheus reader always, an OTLP reader when
    `OTEL_EXPORTER_OTLP_ENDPOINT` is set. False when metrics are off."""
    if not enabled():
        return False
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider

    from sequences.tracing import service_resource

    readers = [PrometheusMetricReader()]
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    metrics.set_meter_provider(MeterProvider(
        resource=service_resource(service_name), metric_readers=readers))
    return True


def prometheus_text() -> bytes:
    """The process's metrics in the Prometheus text format."""
    from prometheus_client import generate_latest

    return generate_latest()


def record_samples(samples: list[Sample], names: Iterable[str]) -> None:
    """Replace what the gauges `names` report by `samples` (a consumer that is gone is gone)."""
    fresh: dict[str, dict[tuple, float]] = {name: {} for name in names}
    for name, attributes, value in samples:
        fresh.setdefault(name, {})[tuple(sorted(attributes.items()))] = value
    _latest.update(fresh)


class Sampler:
    """Reads the gauges' figures every `interval` seconds from its sources (each source fails
    on its own: a missing figure is left out, not the others)."""

    def __init__(self, sources: list[tuple[tuple[str, ...], SampleSource]],
                 interval: float | None = None):
        self._sources = sources
        self._interval = interval or float(os.environ.get("SEQUENCES_METRICS_INTERVAL", "5"))

    async def sample_once(self) -> None:
        for names, source in self._sources:
            try:
                record_samples(await source(), names)
            except Exception as error:  # NATS or PostgreSQL away for a moment
                log.debug("metrics sample failed: %s", error)

    async def run(self) -> None:
        while True:
            await self.sample_once()
            await asyncio.sleep(self._interval)
