"""The automatic A/B winner: after a reply, the sequence's variants are compared by reply rate
(replies / delivered, from the analytics projection) with sequences/variants.py's rule: every
variant at least VARIANT_MIN_DELIVERIES delivered (default 200) and the best one's difference
from each other significant at 95% (two-proportion z-test). Then VariantWinnerChosen (`by:
automatic`), once per sequence; the mailer routes new sends to it."""

from __future__ import annotations

import os

from sqlalchemy import text

from contracts.events import ReplyDetected, VariantWinnerChosen
from sequences.eventlog.store import Append, Causation
from sequences.messaging.consumer import Delivery, Subscription
from sequences import variants
from services.enrollment.analytics import NO_STEP

_OUTCOMES = text(
    "SELECT variant, coalesce(sum(n) FILTER (WHERE metric = 'replied'), 0) AS replies,"
    " coalesce(sum(n) FILTER (WHERE metric = 'sent'), 0)"
    " - coalesce(sum(n) FILTER (WHERE metric IN ('bounced_hard', 'bounced_soft')), 0)"
    "   AS delivered"
    " FROM enrollment.analytics_daily WHERE sequence_id = :s AND variant <> ''"
    " AND step_id <> :none GROUP BY variant")


def variant_judge(runtime) -> Subscription:
    judge = Subscription("enrollment-variant-judge", ["inbox"])
    least = int(os.environ.get("VARIANT_MIN_DELIVERIES", str(variants.MIN_DELIVERIES)))

    @judge.on(ReplyDetected)
    async def on_reply(event: ReplyDetected, d: Delivery) -> None:
        found = (await d.conn.execute(text(
            "SELECT s.sequence_id, s.steps FROM enrollment.enrollments e"
            " JOIN enrollment.sequences s USING (sequence_id) WHERE e.enrollment_id = :e"),
            {"e": event.enrollment_id})).first()
        letters = max((len(s.get("variants") or []) for s in found.steps), default=0) \
            if found else 0
        if letters < 2:
            return
        chosen = VariantWinnerChosen(sequence_id=found.sequence_id, letter="A", by="automatic",
                                     chosen_at=runtime.clock.now())
        if (await d.conn.execute(text("SELECT 1 FROM eventlog.events WHERE stream_id = :s"),
                                 {"s": chosen.stream_id()})).first():
            return  # a winner was chosen already (by hand or by this rule)
        rows = (await d.conn.execute(_OUTCOMES, {"s": found.sequence_id, "none": NO_STEP})).all()
        outcomes = {letter: variants.Outcome(0, 0) for letter in variants.LETTERS[:letters]}
        outcomes.update({r.variant: variants.Outcome(int(r.replies), int(r.delivered))
                         for r in rows if r.variant in outcomes})
        winner = variants.automatic_winner(outcomes, min_deliveries=least)
        if winner is None:
            return
        chosen = chosen.model_copy(update={"letter": winner})
        await runtime.store.append(d.conn, [Append(chosen.stream_id(), 0, [chosen])],
                                   Causation.following(d.envelope))

    return judge
