"""One line per event of an enrollment's timeline, saying what happened and, for holds and
stops, why. Pure: it reads the stored event data only."""

from __future__ import annotations

from datetime import date
from typing import Any, Callable


def _step(data: dict) -> str:
    return f"step {data['step_index'] + 1}"


_MOVES = {"not_sending_day": "{date:%a}: not a sending day", "holiday": "{date} {name}",
          "skip_date": "{date} {name} (skip date)", "after_window": "after {at}: next window",
          "before_window": "before {at}: window opens"}


def _moved(moves: list[dict]) -> str:
    """Why the window or holidays moved it, in English (the web app says it in both languages)."""
    return (": " + ", ".join(_MOVES[m["kind"]].format(**{**m, "date": date.fromisoformat(
        m["date"])}) for m in moves)) if moves else ""


_SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "ContactEnrolled": lambda d: "enrolled" + (f" again (attempt {d['attempt']})"
                                               if d.get("attempt", 1) > 1 else "")
                                 + (f"; the contact's timezone: {d['contact_timezone']}"
                                    if d.get("contact_timezone") else ""),
    "StepScheduled": lambda d: f"{_step(d)} planned for {d['due_at']}"
                               + (" (held: the sequence is paused)" if d.get("held") else "")
                               + _moved(d.get("moved") or []),
    "EnrollmentContactZoneChanged": lambda d: "the contact's timezone is now"
                                              f" {d.get('contact_timezone') or 'unset'}",
    "StepDue": lambda d: f"{_step(d)} due ({d['channel']})",
    "EmailSent": lambda d: f"{_step(d)} sent to {d['recipient']}: {d['subject']!r}"
                           f" ({d['message_id']})",
    "EnrollmentStepCompleted": lambda d: f"{_step(d)} done",
    "EnrollmentCompleted": lambda d: "done: no step left",
    "ReplyDetected": lambda d: f"reply from {d['sender']} (matched by {d['matched_by']}"
                               + (f"; intent {d['intent']}" if d.get("intent") else "")
                               + f"): {d.get('excerpt', '')[:120]!r}",
    "AutoReplyDetected": lambda d: f"automatic reply from {d['sender']}, not a reply:"
                                   f" {d['reason']}",
    "EnrollmentReplied": lambda d: "replied: no further step runs",
    "EnrollmentPaused": lambda d: f"paused until {d['until']}: {d['reason']}"
                                  + (f" ({d['note']})" if d.get("note") else ""),
    "EnrollmentResumed": lambda d: f"resumed by {d['by']}",
    "BounceDetected": lambda d: f"{d['kind']} bounce of {d['recipient']}"
                                f" ({d.get('status') or 'no status'}) seen by {d['detected_by']}"
                                + (f": {d['bounce_class']}, {d.get('reason')}"
                                   f" (rule {d.get('rule') or '-'})"
                                   if d.get("bounce_class", "unknown") != "unknown" else ""),
    "EnrollmentNeedsAttention": lambda d: f"needs attention: {d['reason']}",
    "EnrollmentRetried": lambda d: "the held step was tried again",
    "EmailHeld": lambda d: f"{_step(d)} held: {d['reason']}",
    "EmailDeferred": lambda d: f"deferred until {d['until']}: {d['reason']}",
    "EnrollmentBounced": lambda d: f"bounced: {d['reason']}",
    "VariantAssigned": lambda d: f"A/B variant {d['letter']} assigned",
    "VariantWinnerChosen": lambda d: f"A/B winner: variant {d['letter']}, chosen "
                                     + (f"by {d.get('chosen_by') or 'hand'}" if d["by"] == "hand"
                                        else "automatically by reply rate")
                                     + "; new emails use it",
    "EnrollmentStopped": lambda d: f"stopped: {d.get('reason') or 'by hand'}",
    "TaskDue": lambda d: f"{_step(d)}: a {d['channel']} task for {d['owner_name'] or 'the owner'}",
    "TaskCompleted": lambda d: f"task {d['outcome']}" + (f": {d['note']!r}" if d.get("note")
                                                         else ""),
}


def summarize(event_type: str, data: dict[str, Any]) -> str:
    summary = _SUMMARIES.get(event_type)
    return summary(data) if summary else event_type
