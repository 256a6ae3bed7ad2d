"""One trace follows an enrollment from the HTTP request through every service to the SMTP send."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from sequences.devstack.stack import Stack
from sequences.services import SERVICES
from tests.e2e.test_flow import SEQUENCE, mail_to, new_contact
from tests.support import eventually, stack_config


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    spans = tmp_path_factory.mktemp("traces") / "spans.jsonl"
    env = {service: {"SEQUENCES_TRACE_FILE": str(spans), "LOG_FORMAT": "json"}
           for service in SERVICES}
    env["mailer"]["LOG_LEVEL"] = "DEBUG"  # its line for each email sent
    with Stack(stack_config(tmp_path_factory, service_env=env)) as running:
        running.spans_file = spans
        yield running


def spans_by_trace(path) -> dict[str, list[dict]]:
    traces = defaultdict(list)
    for line in path.read_text().splitlines():
        span = json.loads(line)
        traces[span["trace_id"]].append(span)
    return traces


async def test_one_enrollment_is_one_trace_across_gateway_enrollment_scheduler_and_mailer(stack, api):
    sequence_id = (await api.post("/v1/sequences", json=SEQUENCE)).json()["id"]
    contact_id, email = await new_contact(api)
    await api.post(f"/v1/sequences/{sequence_id}/enrollments", json={"contact_id": contact_id})

    async def sent():
        return mail_to(stack, email)

    await eventually(sent)

    def chain_to_request():
        """From the SMTP send up to the HTTP request, once every span between is written (each
        process writes its spans as they end, in batches: the file fills in any order)."""
        for spans in spans_by_trace(stack.spans_file).values():
            by_id = {s["span_id"]: s for s in spans}
            for smtp in (s for s in spans if s["name"] == "smtp.send"):
                chain, span = [], smtp
                while span is not None:
                    chain.append(span)
                    span = by_id.get(span["parent_id"])
                request = f"POST /v1/sequences/{sequence_id}/enrollments"
                if chain[-1]["parent_id"] is None and request in {c["name"] for c in chain}:
                    return spans, chain
        return None

    async def complete():
        return chain_to_request()

    spans, chain = await eventually(complete, timeout=30)
    services = {s["service"] for s in spans}
    assert {"sequences-gateway", "sequences-enrollment", "sequences-scheduler",
            "sequences-mailer"} <= services
    assert chain[0]["attributes"]["sequence_id"] == sequence_id
    assert [s["service"] for s in chain][-1] == "sequences-gateway"
    assert "sequences-scheduler" in {s["service"] for s in chain}

    # the mailer's log line of that send (JSON, LOG_FORMAT=json) carries the send's trace id
    # and span id, and the workspace
    smtp = chain[0]
    [mail] = mail_to(stack, email)
    message_id = mail["Message-ID"].strip("<>")
    lines = [json.loads(line) for line in (stack.log_dir / "mailer.log").read_text().splitlines()
             if line.startswith("{")]
    [sent] = [line for line in lines if line["message"].startswith("sent ")
              and message_id in line["message"]]
    assert (sent["trace_id"], sent["span_id"]) == (smtp["trace_id"], smtp["span_id"])
    assert sent["workspace_id"] == stack.workspace["workspace_id"]
