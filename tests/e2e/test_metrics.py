"""Metrics on the real stack: every service serves Prometheus text at /metrics on its health
port (the gateway on its own port); emails sent, consumer lag and handler failures read from
them after emails went through, by scraping them here and through a real Prometheus (Debian's
`prometheus`) asked with PromQL."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sequences.devstack.capture import read_captured
from sequences.devstack.stack import Stack
from sequences.metrics import METRIC_NAMES
from sequences.services import SERVICES
from tests.e2e.test_flow import new_contact
from tests.prometheus import PROMETHEUS, Prometheus
from tests.support import eventually, stack_config


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A stack of its own: on the shared one, every module's emails are sent and captured.
    Gauges sampled every second (5 s by default), so a scrape sees lag go back to 0 sooner."""
    every_second = {name: {"SEQUENCES_METRICS_INTERVAL": "1"} for name in SERVICES}
    with Stack(stack_config(tmp_path_factory, service_env=every_second)) as running:
        yield running


def metrics_urls(stack) -> dict[str, str]:
    """Every process's /metrics, by a name of its own (service-replica; the gateway)."""
    urls = {f"{name}-{replica}": f"http://127.0.0.1:{port}/metrics"
            for (name, replica), port in stack.health_ports.items()}
    urls["gateway"] = f"{stack.gateway_url}/metrics"
    return urls

EMAILS = 5
ONE_STEP = {
    "name": "metrics", "sender_name": "Ops", "sender_email": "ops@sales.example",
    "timezone": "UTC", "send_policy": {"mode": "as_soon_as_due"},
    "steps": [{"channel": "email", "wait_days": 0, "subject": "Hello {{고객명}}",
               "body": "Hi {{고객명}}"}],
}


async def scrape(stack) -> dict[str, list]:
    """Every sample of every process, by sample name: [(labels, value), ...]."""
    samples: dict[str, list] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for url in metrics_urls(stack).values():
            answer = await client.get(url)
            assert answer.status_code == 200, url
            assert answer.headers["content-type"].startswith("text/plain")
            for family in text_string_to_metric_families(answer.text):
                for sample in family.samples:
                    samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def total(samples, name: str, **labels) -> float:
    return sum(value for found, value in samples.get(name, [])
               if all(found.get(k) == v for k, v in labels.items()))


async def test_metrics_count_the_emails_and_lag_returns_to_zero(stack, api):
    before = await scrape(stack)
    for number in range(EMAILS):  # a sender each: one sender's minimum gap would space them
        sequence = (await api.post("/v1/sequences", json={
            **ONE_STEP, "sender_email": f"ops{number}@sales.example"})).json()["id"]
        contact, _ = await new_contact(api)
        enrolled = await api.post(f"/v1/sequences/{sequence}/enrollments",
                                  json={"contact_id": contact})
        assert enrolled.status_code == 201, enrolled.text
    sent_before = total(before, "sequences_emails_total", outcome="sent")

    async def all_sent_and_caught_up():
        try:
            return await sent_and_caught_up()
        except AssertionError:  # not yet (`eventually` polls until the check is truthy)
            return None

    async def sent_and_caught_up():
        now = await scrape(stack)
        sent = total(now, "sequences_emails_total", outcome="sent") - sent_before
        assert (sent, len(read_captured(stack.mail_dir))) == (EMAILS, EMAILS)
        pending = now.get("sequences_consumer_pending", [])
        assert {labels["consumer"] for labels, _ in pending}, "no consumer reported"
        assert all(value == 0 for _, value in pending), pending
        return now

    after = await eventually(all_sent_and_caught_up, timeout=120)
    assert total(after, "sequences_consumer_failures_total") == total(
        before, "sequences_consumer_failures_total")
    assert total(after, "messaging_client_consumed_messages_total") > 0
    assert total(after, "sequences_step_due_to_sent_duration_seconds_count") >= EMAILS
    assert total(after, "sequences_step_lateness_seconds_count") >= EMAILS
    assert total(after, "http_server_request_duration_seconds_count",
                 http_route="/v1/sequences/{sequence_id}/enrollments") >= EMAILS
    assert "sequences_outbox_depth" in after and "sequences_due_steps_pending" in after
    # what the processes export is what dashboards and alerts may name
    exported = {name.removesuffix(suffix) for name in after
                for suffix in ("_bucket", "_count", "_sum", "_created", "")
                if name.endswith(suffix) and name.removesuffix(suffix) in METRIC_NAMES}
    # (a counter appears once it counted something: no failure, webhook, click or IMAP op
    # here; no connected mailbox either, whose gauges test_mailboxes.py checks)
    assert exported >= METRIC_NAMES - {
        "sequences_imap_operation_duration_seconds", "sequences_webhook_deliveries_total",
        "sequences_consumer_failures_total", "sequences_inbound_messages_total",
        "sequences_tracking_clicks_total",
        "sequences_mailbox_sent",
        "sequences_mailbox_limit"}


def test_sequences_status_reads_the_same_figures(stack):
    import json
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "sequences.cli", "status", "--json"],
                          env={**os.environ, **stack.env()}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert {"mailer", "scheduler-planner"} <= {c["consumer"] for c in found["consumers"]}
    assert found["outbox_depth"] is not None and found["due_pending"] is not None
    assert found["sent_last_minute"] is not None and found["webhooks_pending"] is not None


# --- through a real Prometheus ---------------------------------------------------------------

PROMETHEUS_EMAILS = 20
# their senders, apart from the other test's: `mailbox` tells this test's emails from those
PROMETHEUS_SENDERS = 'mailbox=~"prom[0-9]+@sales[.]example"'


@pytest.fixture(scope="module")
def prometheus(stack, tmp_path_factory):
    if PROMETHEUS is None:
        pytest.skip("Debian's prometheus package (.ci/run installs it)")
    with Prometheus(tmp_path_factory.mktemp("prometheus"), metrics_urls(stack)) as running:
        yield running


async def test_prometheus_scrapes_every_process_and_counts_20_emails(stack, api, prometheus):
    jobs = set(metrics_urls(stack))

    async def every_target_up():
        up = await prometheus.query("up")
        return {labels["job"] for labels, value in up if value == 1} == jobs
    await eventually(every_target_up, timeout=60, interval=0.5)

    for number in range(PROMETHEUS_EMAILS):  # a sender each, as above
        sequence = (await api.post("/v1/sequences", json={
            **ONE_STEP, "sender_email": f"prom{number}@sales.example"})).json()["id"]
        contact, _ = await new_contact(api)
        enrolled = await api.post(f"/v1/sequences/{sequence}/enrollments",
                                  json={"contact_id": contact})
        assert enrolled.status_code == 201, enrolled.text

    sent = f'sum(sequences_emails_total{{outcome="sent", {PROMETHEUS_SENDERS}}})'

    async def twenty_sent():
        return await prometheus.value(sent) == PROMETHEUS_EMAILS
    await eventually(twenty_sent, timeout=120, interval=0.5)
    assert await prometheus.value(f"count(sequences_emails_total{{{PROMETHEUS_SENDERS}}})") \
        == PROMETHEUS_EMAILS  # one series per mailbox, each sent once: nothing else counted

    async def every_consumer_caught_up():
        pending = await prometheus.query("max by (consumer) (sequences_consumer_pending)")
        ages = await prometheus.query(
            "max by (consumer) (sequences_consumer_oldest_pending_age_seconds)")
        consumers = {labels["consumer"] for labels, _ in pending}
        caught_up = all(value == 0 for _, value in pending + ages)
        return caught_up and {"mailer", "scheduler-planner"} <= consumers and consumers
    consumers = await eventually(every_consumer_caught_up, timeout=120, interval=0.5)
    assert len(consumers) >= 4, consumers

    # the mailer handled events (so the consumers were counted), and no handler failed
    assert await prometheus.value(
        'sum(messaging_client_consumed_messages_total{messaging_consumer_group_name="mailer"})'
    ) >= PROMETHEUS_EMAILS
    assert await prometheus.value(
        "sum(sequences_consumer_failures_total) or vector(0)") == 0


async def test_every_dashboard_query_is_promql_prometheus_accepts(prometheus):
    """The dashboards' expressions parse and evaluate in a real Prometheus (the names they may
    use are checked in tests/unit/test_dashboards.py)."""
    from tests.unit.test_dashboards import DASHBOARDS, load, queries

    grafana = {"$__rate_interval": "1m", "$mailbox": ".*"}
    checked = 0
    for path in DASHBOARDS:
        for where, expr in queries(load(path)):
            for variable, value in grafana.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, where
            await prometheus.query(expr)  # raises with Prometheus's error
            checked += 1
    assert checked >= 30
