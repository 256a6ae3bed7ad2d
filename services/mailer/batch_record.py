"""The record of a batch of due steps, in the consumer's transaction: the mailboxes found
unhealthy, the A/B letters and pool mailboxes given, one statement for the deliveries (their
send intents removed, and those of refused emails), and one append of every event of the
batch. Binary array parameters (exec_driver_sql, as the event store): psycopg quotes nothing."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import text

from contracts.events import BounceDetected, EmailDeferred, EmailFailed, EmailHeld
from sequences import mailboxes as connected_mailboxes
from sequences import metrics
from sequences.eventlog.store import EventStore
from services.mailer.batch_plan import Outcome


async def record(conn, store: EventStore, outcome: Outcome, now: datetime) -> None:
    sent, refused = outcome.sent, outcome.refused
    for mailbox_id, problem in outcome.unhealthy:
        await connected_mailboxes.mark(conn, mailbox_id, False, problem, now)
    if outcome.letters:
        await conn.execute(_LETTERS, {"e": [e for e, _ in outcome.letters],
                                      "l": [letter for _, letter in outcome.letters]})
    if outcome.assigned:
        await conn.exec_driver_sql(_ASSIGN, {
            "enrollments": [e for e, _, _ in outcome.assigned],
            "addresses": [a for _, a, _ in outcome.assigned],
            "days": [d for _, _, d in outcome.assigned]})
    if sent:
        await conn.exec_driver_sql(_NOT_AWAITING, {"enrollments": [e.enrollment_id
                                                                    for e, _ in sent]})
    if sent or refused:
        done = [event for event, _ in sent] + refused
        await conn.exec_driver_sql(_RECORD_SENT, {
            "done_enrollments": [e.enrollment_id for e in done],
            "done_steps": [e.step_id for e in done],
            "enrollments": [e.enrollment_id for e, _ in sent],
            "steps": [e.step_id for e, _ in sent],
            "step_indexes": [e.step_index for e, _ in sent],
            "message_ids": [m.message_id for _, m in sent],
            "subjects": [m.thread.thread_subject for _, m in sent],
            "references": [json.dumps(list(m.thread.references)) for _, m in sent],
            "recipients": [m.recipient for _, m in sent],
            "sent_ats": [m.date for _, m in sent]})
    if outcome.appends:
        await store.append(conn, outcome.appends, outcome.appends[0].causation)
    _count_emails(outcome)


_LETTERS = text(
    "INSERT INTO mailer.enrollment_variants (enrollment_id, letter)"
    " SELECT * FROM unnest(CAST(:e AS uuid[]), CAST(:l AS text[]))"
    " ON CONFLICT DO NOTHING")
_RECORD_SENT = """
    WITH cleared AS (
        DELETE FROM mailer.send_intents i
        USING unnest(%(done_enrollments)b::uuid[], %(done_steps)b::uuid[]) AS v(e, s)
        WHERE i.enrollment_id = v.e AND i.step_id = v.s
    )
    INSERT INTO mailer.deliveries (enrollment_id, step_id, step_index, message_id,
                                   thread_subject, "references", recipient, sent_at)
    SELECT e, s, i, m, t, ARRAY(SELECT jsonb_array_elements_text(r::jsonb)), rc, at
    FROM unnest(%(enrollments)b::uuid[], %(steps)b::uuid[], %(step_indexes)b::integer[],
                %(message_ids)b::text[], %(subjects)b::text[], %(references)b::text[],
                %(recipients)b::text[], %(sent_ats)b::timestamptz[])
        AS v(e, s, i, m, t, r, rc, at)
"""
_ASSIGN = """
    INSERT INTO mailer.enrollment_mailboxes (enrollment_id, address, day)
    SELECT * FROM unnest(%(enrollments)b::uuid[], %(addresses)s::text[], %(days)s::date[])
    ON CONFLICT (enrollment_id) DO NOTHING
"""
_NOT_AWAITING = """
    UPDATE mailer.enrollment_mailboxes SET awaiting = false
    WHERE enrollment_id = ANY(%(enrollments)b::uuid[]) AND awaiting
"""


def _count_emails(outcome: Outcome) -> None:
    """`sequences.emails` by outcome, mailbox and a reason of few values (a text's message,
    an SMTP code, a bounce class; never a free-form server reply). Sent ones are counted as
    the SMTP server accepts them (`smtp_sends`)."""
    for append in outcome.appends:
        for event in append.events:
            kind, reason = _EMAIL_OUTCOMES.get(type(event), (None, None))
            if kind is None:
                continue
            mailbox = outcome.senders.get(getattr(event, "enrollment_id", None), "")
            metrics.emails.add(1, {"outcome": kind, "mailbox": mailbox,
                                   "reason": reason(event)})


def _text_reason(event) -> str:
    return event.reason_text.message if event.reason_text else "other"


_EMAIL_OUTCOMES = {
    EmailHeld: ("held", _text_reason),
    EmailDeferred: ("deferred", _text_reason),
    EmailFailed: ("failed", lambda event: str(event.smtp_code or "none")),
    BounceDetected: ("bounced", lambda event: event.bounce_class),
}
