"""One line per event of an enrollment's timeline, saying what happened and, for holds and
stops, why. Pure: it reads the stored event data only."""

from __future__ import annotations

from typing import Any, Callable


def _step(data: dict) -> str:
    return f"step {data['step_index'] + 1}"


_SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "ContactEnrolled": lambda d: "enrolled" + (f" again (attempt {d['attempt']})"
                                               if d.get("attempt", 1) > 1 else ""),
    "StepScheduled": lambda d: f"{_step(d)} planned for {d['due_at']}"
                               + (" (held: the sequence is paused)" if d.get("held") else ""),
    "StepDue": lambda d: f"{_step(d)} due ({d['channel']})",
    "EmailSent": lambda d: f"{_step(d)} sent to {d['recipient']}: {d['subject']!r}"
                           f" ({d['message_id']})",
    "EnrollmentStepCompleted": lambda d: f"{_step(d)} done",
    "EnrollmentCompleted": lambda d: "done: no step left",
    "ReplyDetected": lambda d: f"reply from {d['sender']} (matched by {d['matched_by']}):"
                               f" {d.get('excerpt', '')[:120]!r}",
    "AutoReplyDetected": lambda d: f"automatic reply from {d['sender']}, not a reply:"
                                   f" {d['reason']}",
    "EnrollmentReplied": lambda d: "replied: no further step runs",
    "BounceDetected": lambda d: f"{d['kind']} bounce of {d['recipient']}"
                                f" ({d.get('status') or 'no status'}) seen by {d['detected_by']}",
    "EnrollmentBounced": lambda d: f"bounced: {d['reason']}",
    "EnrollmentStopped": lambda d: f"stopped: {d.get('reason') or 'by hand'}",
}


def summarize(event_type: str, data: dict[str, Any]) -> str:
    summary = _SUMMARIES.get(event_type)
    return summary(data) if summary else event_type
