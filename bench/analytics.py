"""Analytics and click redirects (issue 16, "Measure").

The issue: "The analytics endpoint for a sequence with 100,000 enrollments and 300,000 emails:
p95 under 100 ms; click redirects: requests/s of `/c/<token>` against the gateway's `/healthz`
in the same run (at least 0.5x)."

How it runs: the dev stack (every service its own process) on the benchmark's PostgreSQL. A
sequence of three email steps is made through the API; its analytics projection tables
(services/enrollment/analytics.py) are then filled in bulk by SQL with what the projector
writes for N enrollments and 3N emails sent over 90 days (a tenth opened by people, a third by
machines, clicks, replies by intent, bounces, opt-outs): replaying 700,000 events through the
projector would take most of an hour here and leave the same rows. `VACUUM ANALYZE`, then
`GET /v1/sequences/{id}/analytics?from=&to=` over the 90 days, R times over one keep-alive
connection (after 5 unmeasured): the gateway's `Server-Timing` (NATS round trip and the
service's query included). Baseline: the projection's SQL on PostgreSQL directly.

Click redirects: a real delivery row in the mailer and a click token signed with the stack's
secret; C requests of `/c/<token>` (each one a 302, and a click the gateway sends to the mailer
in a batch after the answer) and of `/healthz`, from 8 concurrent keep-alive clients, alternating rounds; figure:
requests/s of each, ratio against `/healthz`.

N = 100,000, R = 200, C = 2,000; --quick: 10,000, 60, 500.

    python -m bench --only analytics [--quick]
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import httpx
import psycopg

from bench import common
from bench.common import Result
from bench.service_common import percentile
from sequences.devstack.stack import Stack, StackConfig
from sequences.signing import Signer
from services.enrollment.analytics import _ROWS
from services.gateway.timing import server_timing

TARGET_MS = 100
MIN_CLICK_RATIO = 0.5
WARMUP = 5
DAYS = 90
CLIENTS = 8

_SEQUENCE = {
    "name": "bench analytics", "sender_name": "Bench", "sender_email": "bench@sales.example",
    "timezone": "Asia/Seoul", "send_policy": {"mode": "as_soon_as_due"},
    "steps": [{"channel": "email", "wait_days": 30 * i, "subject": "s" if i == 0 else None,
               "body": "hello https://site.example/"} for i in range(3)],
}

# what the projector leaves for N enrollments of one sequence and 3 emails each, in bulk
_SEED = """
INSERT INTO enrollment.analytics_enrollments (enrollment_id, workspace_id, sequence_id,
                                              last_step_id)
SELECT gen_random_uuid(), %(ws)s, %(seq)s, %(last)s FROM generate_series(1, %(n)s);

INSERT INTO enrollment.analytics_emails (enrollment_id, step_id, message_id, opened_human,
                                         opened_machine, clicked_human, clicked_machine)
SELECT e.enrollment_id, s.step_id, gen_random_uuid()::text, random() < 0.1, random() < 0.33,
       random() < 0.03, random() < 0.1
FROM enrollment.analytics_enrollments e,
     unnest(%(steps)s::uuid[]) AS s(step_id)
WHERE e.sequence_id = %(seq)s;

INSERT INTO enrollment.analytics_daily (workspace_id, sequence_id, step_id, variant, day,
                                        metric, n)
SELECT %(ws)s, %(seq)s, step_id, '', day, metric, count(*)
FROM (SELECT m.step_id, %(start)s::date + (abs(hashtext(m.message_id)) %% %(days)s) AS day,
             unnest(ARRAY['sent'] || CASE WHEN m.opened_human THEN ARRAY['opened_human']
                                          ELSE '{}' END
                    || CASE WHEN m.opened_machine THEN ARRAY['opened_machine'] ELSE '{}' END
                    || CASE WHEN m.clicked_human THEN ARRAY['clicked_human'] ELSE '{}' END
                    || CASE WHEN m.clicked_machine THEN ARRAY['clicked_machine'] ELSE '{}' END
                    || CASE WHEN abs(hashtext(m.message_id)) %% 50 = 0
                            THEN ARRAY['replied', 'replied_interested'] ELSE '{}' END
                    || CASE WHEN abs(hashtext(m.message_id)) %% 97 = 0
                            THEN ARRAY['bounced_hard'] ELSE '{}' END
                    || CASE WHEN abs(hashtext(m.message_id)) %% 400 = 0
                            THEN ARRAY['opted_out'] ELSE '{}' END) AS metric
      FROM enrollment.analytics_emails m) AS v
GROUP BY step_id, day, metric;

INSERT INTO enrollment.analytics_daily (workspace_id, sequence_id, step_id, variant, day,
                                        metric, n)
SELECT %(ws)s, %(seq)s, '00000000-0000-0000-0000-000000000000', '', %(start)s::date + d,
       'enrolled', %(n)s / %(days)s
FROM generate_series(0, %(days)s - 1) AS d;
"""


def _stack(data_dir: Path) -> Stack:
    return Stack(StackConfig(data_dir=data_dir, gateway_port=0, nats_port=0, smtp_port=0,
                             mail_viewer_port=0, log_to_files=True,
                             database_url=common.fresh_database("analytics")))


def _ms(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(values, 50), 2), "p95_ms": round(percentile(values, 95), 2)}


async def _seed(stack: Stack, n: int) -> tuple[dict, date]:
    async with stack.api_client(timeout=120) as api:
        me = (await api.get("/v1/me")).raise_for_status().json()
        made = (await api.post("/v1/sequences", json=_SEQUENCE)).raise_for_status().json()
        sequence = (await api.get(f"/v1/sequences/{made['id']}")).raise_for_status().json()
    steps = [s["step_id"] for s in sequence["steps"]]
    start = date(2026, 1, 1)
    common.progress(f"analytics: seeding the projection: {n:,} enrollments, {3 * n:,} emails")
    with psycopg.connect(**common.connect_params(stack.database_url), autocommit=True) as conn:
        params = {"ws": me["workspace_id"], "seq": made["id"], "last": steps[-1], "n": n,
                  "steps": steps, "start": start, "days": DAYS}
        for statement in filter(str.strip, _SEED.split(";\n")):
            conn.execute(statement, params)
        conn.execute("VACUUM ANALYZE enrollment.analytics_daily")
        rows = conn.execute("SELECT count(*) FROM enrollment.analytics_daily").fetchone()[0]
    common.progress(f"  {rows:,} rows of analytics_daily")
    return {"workspace_id": me["workspace_id"], "sequence_id": made["id"], "steps": steps,
            "rows": rows}, start


async def _endpoint(stack: Stack, seeded: dict, start: date, requests: int) -> Result:
    until = start + timedelta(days=DAYS - 1)
    path = f"/v1/sequences/{seeded['sequence_id']}/analytics?from={start}&to={until}"
    server = []
    async with stack.api_client(timeout=60) as api:
        for i in range(WARMUP + requests):
            answer = (await api.get(path)).raise_for_status()
            if i == 0:
                sent = answer.json()["totals"]["counts"]["sent"]
                if sent != 3 * int(seeded["n"]):
                    raise RuntimeError(f"analytics: the endpoint counted {sent} emails sent")
            if i >= WARMUP:
                server.append(server_timing(answer.headers["server-timing"])["app"])
    raw = []
    sql = str(_ROWS).replace(":s", "%(s)s").replace(":ws", "%(ws)s") \
        .replace(":from", "%(from)s").replace(":to", "%(to)s")
    params = {"s": seeded["sequence_id"], "ws": seeded["workspace_id"], "from": start,
              "to": until}
    with psycopg.connect(**common.connect_params(stack.database_url), autocommit=True) as conn:
        for i in range(WARMUP + requests):
            began = time.perf_counter()
            conn.execute(sql, params).fetchall()
            if i >= WARMUP:
                raw.append((time.perf_counter() - began) * 1000)
    p95, raw_p95 = percentile(server, 95), percentile(raw, 95)
    n = int(seeded["n"])
    return Result(f"GET /v1/sequences/{{id}}/analytics, {DAYS} days, {n:,} enrollments /"
                  f" {3 * n:,} emails: server p95", p95, "ms", raw_p95,
                  "the projection's SQL on PostgreSQL, p95", p95 / raw_p95 if raw_p95 else None,
                  f"< {TARGET_MS} ms", p95 < TARGET_MS,
                  details={"server": _ms(server), "raw_sql": _ms(raw),
                           "analytics_daily_rows": seeded["rows"], "requests": requests})


def _click_url(stack: Stack, seeded: dict) -> str:
    """A click token for a real delivery row (so every click is recorded by the mailer)."""
    enrollment_id, step_id = uuid.uuid4(), seeded["steps"][0]
    with psycopg.connect(**common.connect_params(stack.database_url), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO mailer.deliveries (enrollment_id, step_id, step_index, message_id,"
            " thread_subject, \"references\", recipient, sent_at)"
            " VALUES (%s, %s, 0, %s, 's', '{}', 'kim@customer.example', now() - interval '1 h')",
            (enrollment_id, step_id, f"<{uuid.uuid4()}@sales.example>"))
    signer = Signer(stack.env()["SEQUENCES_SECRET"].encode())
    token = signer.sign("click", {"w": seeded["workspace_id"], "e": str(enrollment_id),
                                  "s": step_id, "i": 0, "u": "https://site.example/"})
    return f"{stack.gateway_url}/c/{token}"


async def _rate(url: str, requests: int, expect: int) -> float:
    """Requests/s of `requests` GETs of `url` from CLIENTS concurrent keep-alive clients."""
    headers = {"user-agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36"}
    clients = [httpx.AsyncClient(timeout=60, headers=headers) for _ in range(CLIENTS)]

    async def client_loop(client, count):
        for _ in range(count):
            answer = await client.get(url)
            if answer.status_code != expect:
                raise RuntimeError(f"analytics: {url} answered {answer.status_code}")

    try:
        await asyncio.gather(*(client_loop(c, 5) for c in clients))  # warm up
        began = time.perf_counter()
        await asyncio.gather(*(client_loop(c, requests // CLIENTS) for c in clients))
        return (requests // CLIENTS) * CLIENTS / (time.perf_counter() - began)
    finally:
        for client in clients:
            await client.aclose()


async def _clicks(stack: Stack, seeded: dict, requests: int) -> Result:
    click, health = _click_url(stack, seeded), f"{stack.gateway_url}/healthz"
    clicks, healths = [], []
    for _ in range(2):  # alternating rounds: the machine's load changes under every figure
        healths.append(await _rate(health, requests, 200))
        clicks.append(await _rate(click, requests, 302))
    best_click, best_health = max(clicks), max(healths)
    return Result.compare(f"/c/<token> click redirects ({CLIENTS} clients)", best_click, "req/s",
                          best_health, "/healthz, req/s", MIN_CLICK_RATIO,
                          details={"click_rounds": [round(r) for r in clicks],
                                   "healthz_rounds": [round(r) for r in healths],
                                   "cpus": os.cpu_count()})


async def run(quick: bool) -> list[Result]:
    n, requests, clicks = (10_000, 60, 500) if quick else (100_000, 200, 2_000)
    with tempfile.TemporaryDirectory(prefix="sequences-bench-analytics-") as temp:
        with _stack(Path(temp)) as stack:
            seeded, start = await _seed(stack, n)
            seeded["n"] = n
            endpoint = await _endpoint(stack, seeded, start, requests)
            redirects = await _clicks(stack, seeded, clicks)
    return [endpoint, redirects]
