"""Analytics: per sequence, step, A/B variant and UTC day, how many were enrolled, sent, bounced
(hard / soft), opened and clicked (unique per email; a person's and a machine's apart, by
sequences/machine_rules.py), replied (and by intent) and opted out. A projection of its own,
fed from the log and rebuilt by `sequences projections rebuild` like the others; the API adds
the rows of a date range up (`analytics_view`), it never scans events per request.

Each thing counts on the day it happened (UTC), on the step of the email it concerns: a reply,
a bounce without its message and an opt-out on the enrollment's last email."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import date, datetime, timezone

from sqlalchemy import text

from contracts.events import (
    BounceDetected,
    ContactEnrolled,
    EmailClicked,
    EmailOpened,
    EmailSent,
    EnrollmentStopped,
    ReplyDetected,
)
from contracts.views import (
    REPLY_INTENTS,
    SequenceAnalytics,
    StepAnalytics,
    VariantAnalytics,
    analytics_counts,
)
from sequences.messaging.consumer import Delivery, Subscription, waves
from sequences.projections import Projection

NO_STEP = uuid.UUID(int=0)  # enrolled, and bounces refused at send time

analytics = Subscription("analytics-projector", ["enrollment", "delivery", "inbox", "bounce"],
                         rebuildable=True)
PROJECTION = Projection(analytics, ("enrollment.analytics_daily",
                                    "enrollment.analytics_enrollments",
                                    "enrollment.analytics_emails"),
                        in_log_order=True)

_COUNT = text(
    "INSERT INTO enrollment.analytics_daily AS a (workspace_id, sequence_id, step_id, variant,"
    " day, metric, n) SELECT e.workspace_id, e.sequence_id, :step, :variant, :day, m, 1"
    " FROM enrollment.analytics_enrollments e, unnest(CAST(:metrics AS text[])) AS m"
    " WHERE e.enrollment_id = :enrollment"
    " ON CONFLICT (sequence_id, day, step_id, variant, metric) DO UPDATE SET n = a.n + 1")


async def _count(conn, enrollment_id, step_id, variant: str, at: datetime, *metrics: str) -> None:
    await conn.execute(_COUNT, {"enrollment": enrollment_id, "step": step_id or NO_STEP,
                                "variant": variant, "day": _day(at), "metrics": list(metrics)})


def _day(at: datetime) -> date:
    return at.astimezone(timezone.utc).date()


# Enrollments and emails sent come in runs (a bulk enrollment, a send time's batch): each run is
# one statement, counting each day's new ones at once
_ENROLLED = f"""
    WITH v AS (SELECT * FROM unnest(%(ids)b::uuid[], %(workspaces)b::uuid[],
                                    %(sequences)b::uuid[], %(days)b::date[])
                             AS v(enrollment_id, workspace_id, sequence_id, day)),
    new AS (INSERT INTO enrollment.analytics_enrollments (enrollment_id, workspace_id, sequence_id)
            SELECT enrollment_id, workspace_id, sequence_id FROM v ON CONFLICT DO NOTHING
            RETURNING enrollment_id, workspace_id, sequence_id)
    INSERT INTO enrollment.analytics_daily AS a (workspace_id, sequence_id, step_id, variant, day,
                                                 metric, n)
    SELECT new.workspace_id, new.sequence_id, '{NO_STEP}', '', v.day, 'enrolled', count(*)
    FROM new JOIN v USING (enrollment_id) GROUP BY new.workspace_id, new.sequence_id, v.day
    ON CONFLICT (sequence_id, day, step_id, variant, metric) DO UPDATE SET n = a.n + EXCLUDED.n
"""
# an email counts once (its row is new), on the enrollment's sequence, which learns its last email
_SENT = """
    WITH v AS (SELECT * FROM unnest(%(ids)b::uuid[], %(steps)b::uuid[], %(messages)b::text[],
                                    %(variants)b::text[], %(days)b::date[])
                             AS v(enrollment_id, step_id, message_id, variant, day)),
    new AS (INSERT INTO enrollment.analytics_emails (enrollment_id, step_id, message_id, variant)
            SELECT enrollment_id, step_id, message_id, variant FROM v ON CONFLICT DO NOTHING
            RETURNING enrollment_id, step_id),
    moved AS (UPDATE enrollment.analytics_enrollments e SET last_step_id = v.step_id,
                  variant = v.variant
              FROM new JOIN v USING (enrollment_id, step_id)
              WHERE e.enrollment_id = new.enrollment_id
              RETURNING e.workspace_id, e.sequence_id, v.step_id, v.variant, v.day)
    INSERT INTO enrollment.analytics_daily AS a (workspace_id, sequence_id, step_id, variant, day,
                                                 metric, n)
    SELECT workspace_id, sequence_id, step_id, variant, day, 'sent', count(*) FROM moved
    GROUP BY workspace_id, sequence_id, step_id, variant, day
    ON CONFLICT (sequence_id, day, step_id, variant, metric) DO UPDATE SET n = a.n + EXCLUDED.n
"""


@analytics.on_batch(ContactEnrolled)
async def enrolled(run: list, conn) -> None:
    firsts: dict = {}
    for envelope in run:  # (an enrollment counts once)
        firsts.setdefault(envelope.data["enrollment_id"], envelope)
    run = list(firsts.values())
    await conn.exec_driver_sql(_ENROLLED, {
        "ids": [e.data["enrollment_id"] for e in run],
        "workspaces": [e.workspace_id for e in run],
        "sequences": [e.data["sequence_id"] for e in run],
        "days": [_day(datetime.fromisoformat(e.data["enrolled_at"])) for e in run]})


@analytics.on_batch(EmailSent)
async def sent(run: list, conn) -> None:
    # an enrollment's emails a wave each, so its last one is the one it keeps as last
    for wave in waves(run):
        await conn.exec_driver_sql(_SENT, {
            "ids": [e.data["enrollment_id"] for e in wave],
            "steps": [e.data["step_id"] for e in wave],
            "messages": [e.data["message_id"] for e in wave],
            "variants": [e.data.get("variant") or "" for e in wave],
            "days": [_day(datetime.fromisoformat(e.data["sent_at"])) for e in wave]})


async def _first(conn, enrollment_id, step_id, flag: str) -> str | None:
    """Sets the email's flag; its variant if the flag was not set before (the first open,
    click, ...), else None."""
    row = (await conn.execute(text(
        f"UPDATE enrollment.analytics_emails SET {flag} = true"
        f" WHERE enrollment_id = :e AND step_id = :s AND NOT {flag} RETURNING variant"),
        {"e": enrollment_id, "s": step_id})).first()
    return None if row is None else row.variant


async def _unique(d: Delivery, event: EmailOpened | EmailClicked, kind: str, at: datetime):
    """The email's first open (or click) of a person's, or of a machine's, counts once."""
    flag = f"{kind}_{'machine' if event.machine else 'human'}"
    variant = await _first(d.conn, event.enrollment_id, event.step_id, flag)
    if variant is not None:
        await _count(d.conn, event.enrollment_id, event.step_id, variant, at, flag)


@analytics.on(EmailOpened)
async def opened(event: EmailOpened, d: Delivery) -> None:
    await _unique(d, event, "opened", event.opened_at)


@analytics.on(EmailClicked)
async def clicked(event: EmailClicked, d: Delivery) -> None:
    await _unique(d, event, "clicked", event.clicked_at)


@analytics.on(BounceDetected)
async def bounced(event: BounceDetected, d: Delivery) -> None:
    """On the email it names, else the last one sent; one refused at send time (no email sent)
    on no step. Once per email."""
    email = (await d.conn.execute(text(
        "SELECT step_id FROM enrollment.analytics_emails WHERE enrollment_id = :e"
        " AND (message_id = :m OR (CAST(:m AS text) IS NULL AND step_id = ("
        "   SELECT last_step_id FROM enrollment.analytics_enrollments WHERE enrollment_id = :e)))"),
        {"e": event.enrollment_id, "m": event.original_message_id})).first()
    metric = f"bounced_{event.kind}"
    if email is None:
        await _count(d.conn, event.enrollment_id, NO_STEP, "", event.detected_at, metric)
    elif (variant := await _first(d.conn, event.enrollment_id, email.step_id, "bounced")) \
            is not None:
        await _count(d.conn, event.enrollment_id, email.step_id, variant, event.detected_at,
                     metric)


@analytics.on(ReplyDetected)
async def replied(event: ReplyDetected, d: Delivery) -> None:
    """Once per enrollment, on its last email; by `intent` where the reply carries one (the
    stop-rules work adds it), else "other"."""
    step = (await d.conn.execute(text(
        "UPDATE enrollment.analytics_enrollments SET replied = true"
        " WHERE enrollment_id = :e AND NOT replied RETURNING last_step_id, variant"),
        {"e": event.enrollment_id})).first()
    if step is not None:
        intent = getattr(event, "intent", None) or d.envelope.data.get("intent") or "other"
        intent = intent if intent in REPLY_INTENTS else "other"
        await _count(d.conn, event.enrollment_id, step.last_step_id, step.variant,
                     event.received_at, "replied", f"replied_{intent}")


@analytics.on(EnrollmentStopped)
async def stopped(event: EnrollmentStopped, d: Delivery) -> None:
    if not (event.reason or "").startswith("opted out"):
        return
    step = (await d.conn.execute(text(
        "UPDATE enrollment.analytics_enrollments SET opted_out = true"
        " WHERE enrollment_id = :e AND NOT opted_out RETURNING last_step_id, variant"),
        {"e": event.enrollment_id})).first()
    if step is not None:
        await _count(d.conn, event.enrollment_id, step.last_step_id, step.variant,
                     event.stopped_at, "opted_out")


# --- the query -----------------------------------------------------------------------------

_ROWS = text(
    "SELECT step_id, variant, metric, sum(n) AS n FROM enrollment.analytics_daily"
    " WHERE sequence_id = :s AND workspace_id = :ws AND day BETWEEN :from AND :to"
    " GROUP BY step_id, variant, metric")


async def analytics_view(conn, workspace_id, sequence_id, step_ids: list[str], since: date,
                         until: date) -> SequenceAnalytics:
    """The sums of a date range: the sequence's totals, per step (in the sequence's order),
    and per variant of each step, each with its rates."""
    rows = (await conn.execute(_ROWS, {"s": sequence_id, "ws": workspace_id, "from": since,
                                       "to": until})).all()
    total: Counter[str] = Counter()
    by_step: dict[str, Counter[str]] = {step: Counter() for step in step_ids}
    by_variant: dict[tuple[str, str], Counter[str]] = {}
    for row in rows:
        total[row.metric] += int(row.n)
        if row.step_id == NO_STEP:
            continue
        by_step.setdefault(str(row.step_id), Counter())[row.metric] += int(row.n)
        if row.variant:
            by_variant.setdefault((str(row.step_id), row.variant), Counter())[row.metric] += int(row.n)
    # delivered: sent less the bounces of emails sent (a refusal at send time never was sent)
    total["delivered"] = total["sent"] - sum(
        c["bounced_hard"] + c["bounced_soft"] for c in by_step.values())
    for counts in (*by_step.values(), *by_variant.values()):
        counts["delivered"] = counts["sent"] - counts["bounced_hard"] - counts["bounced_soft"]
    return SequenceAnalytics(
        sequence_id=sequence_id, since=since, until=until, totals=analytics_counts(total),
        steps=[StepAnalytics(step_id=step, position=position,
                             **analytics_counts(by_step[step]).model_dump(),
                             variants=[VariantAnalytics(variant=v, **analytics_counts(c).model_dump())
                                       for (s, v), c in sorted(by_variant.items()) if s == step])
               for position, step in enumerate(step_ids, start=1)])
