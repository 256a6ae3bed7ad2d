"""The enrollment timeline: one enrollment (its contact, sequence, status, current step, next
send or why it is held) and every event of it in words, with what caused each: the answer to
"why did (or didn't) this email go out?". Stopping (asked first) and retrying a held step.

Each event type has a sentence of the catalog, filled from the event's data; a type without
one (or data of an unexpected shape) shows the service's English summary."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Callable

from fastapi import Form, Request
from fastapi.responses import RedirectResponse
from markupsafe import Markup
from pydantic import ValidationError

from contracts import commands as c
from contracts.views import EnrollmentStatus, EnrollmentView, SequenceView, Timeline, TimelineEntry
from sequences.i18n import N_
from services.gateway.web.forms import validation_errors
from services.gateway.web.pages import ask, page_router
from services.gateway.web.session import SignedIn
from services.gateway.web.templating import Texts, render, texts_for

router = page_router()

# the mailer's reason when a merge variable is empty and has no fallback (as the enrollment
# service repeats it: "step 3 not sent: {{직함}} has no value ...")
_MISSING = re.compile(r"^(?:step \d+ not sent: )?\{\{(?P<variable>[^{}|]+)\}\} has no value for"
                      r" this contact and no fallback$")
_CHANNEL_DUE = {"email": N_("Step %(step)s due: an email"),
                "call": N_("Step %(step)s due: a call task for the owner"),
                "sms": N_("Step %(step)s due: an SMS task for the owner")}
_CHANNEL_DONE = {"email": N_("Email step %(step)s done"),
                 "call": N_("Call step %(step)s done"),
                 "sms": N_("SMS step %(step)s done")}


def _step(data: dict) -> int:
    return int(data["step_index"]) + 1


def _moment(value: Any, t: Texts) -> str:
    return t.when(datetime.fromisoformat(value) if isinstance(value, str) else value)


def _held(reason: str, missing: str, other: str) -> tuple[str, dict]:
    if found := _MISSING.match(reason):
        return missing, {"variable": "{{" + found["variable"] + "}}"}
    return other, {"reason": reason}


def _enrolled(d: dict, t: Texts):
    if d.get("attempt", 1) > 1:
        return N_("Enrolled again (attempt %(attempt)s, %(email)s)"), {
            "attempt": d["attempt"], "email": d["email"]}
    return N_("Enrolled (%(email)s)"), {"email": d["email"]}


def _scheduled(d: dict, t: Texts):
    values = {"step": _step(d), "when": _moment(d["due_at"], t)}
    if d.get("held"):
        return N_("Step %(step)s planned for %(when)s, held while the sequence is paused"), values
    if d.get("reason"):
        return N_("Step %(step)s moved to %(when)s: %(reason)s"), {**values, "reason": d["reason"]}
    return N_("Step %(step)s planned for %(when)s"), values


def _reply(d: dict, t: Texts):
    excerpt = " ".join(str(d.get("excerpt") or "").split())
    if not excerpt:
        return N_("Reply from %(sender)s"), {"sender": d["sender"]}
    if len(excerpt) > 120:
        excerpt = excerpt[:119] + "…"
    return N_("Reply from %(sender)s: “%(excerpt)s”"), {"sender": d["sender"], "excerpt": excerpt}


def _bounce(d: dict, t: Texts):
    message = (N_("Hard bounce of %(recipient)s (%(status)s): the address takes no mail")
               if d["kind"] == "hard" else
               N_("Soft bounce of %(recipient)s (%(status)s): refused for now"))
    return message, {"recipient": d["recipient"], "status": d.get("status") or "–"}


_SENTENCES: dict[str, Callable[[dict, Texts], tuple[str, dict]]] = {
    "ContactEnrolled": _enrolled,
    "StepScheduled": _scheduled,
    "StepDue": lambda d, t: (_CHANNEL_DUE[d["channel"]], {"step": _step(d)}),
    "EmailSent": lambda d, t: (N_("Email step %(step)s sent to %(to)s (%(subject)s)"), {
        "step": _step(d), "to": d["recipient"], "subject": d["subject"]}),
    "EmailOpened": lambda d, t: (N_("The email was opened"), {}),
    "EmailHeld": lambda d, t: _held(d["reason"], N_("Held: %(variable)s is empty for this contact"),
                                    N_("Held: %(reason)s")),
    "EmailFailed": lambda d, t: (N_("Email step %(step)s could not be sent (%(attempts)s"
                                    " attempts): %(reason)s"), {
        "step": _step(d), "attempts": d["attempts"], "reason": d["reason"]}),
    "EmailDeferred": lambda d, t: (N_("Sending deferred until %(when)s: %(reason)s"), {
        "when": _moment(d["until"], t), "reason": d["reason"]}),
    "EnrollmentNeedsAttention": lambda d, t: _held(
        d["reason"], N_("Needs attention: %(variable)s is empty for this contact and has no"
                        " fallback. Fill it in on the contact, then retry."),
        N_("Needs attention: %(reason)s")),
    "EnrollmentRetried": lambda d, t: (N_("The held step was tried again"), {}),
    "EnrollmentStepCompleted": lambda d, t: (_CHANNEL_DONE[d["channel"]], {"step": _step(d)}),
    "EnrollmentCompleted": lambda d, t: (N_("Done: every step ran"), {}),
    "ReplyDetected": _reply,
    "AutoReplyDetected": lambda d, t: (N_("Out-of-office reply from %(sender)s: not counted as a"
                                          " reply (%(reason)s)"), {
        "sender": d["sender"], "reason": d["reason"]}),
    "EnrollmentReplied": lambda d, t: (N_("Replied — the enrollment stopped"), {}),
    "BounceDetected": _bounce,
    "EnrollmentBounced": lambda d, t: (N_("Bounced — the enrollment stopped: %(reason)s"), {
        "reason": d["reason"]}),
    "EnrollmentStopped": lambda d, t: ((N_("Stopped: %(reason)s"), {"reason": d["reason"]})
                                       if d.get("reason") else (N_("Stopped by hand"), {})),
}


def sentence(entry: TimelineEntry, t: Texts) -> Markup:
    """The entry in words of the reader's language (its values escaped); the service's English
    summary for a type we have no sentence for."""
    describe = _SENTENCES.get(entry.type)
    if describe is not None:
        try:
            message, values = describe(entry.data, t)
        except (KeyError, TypeError, ValueError):
            pass
        else:
            return t.gettext(message, **values)
    return Markup.escape(entry.summary)


def attention(view: EnrollmentView, t: Texts) -> Markup | None:
    """Why the enrollment's step is held, in words."""
    if view.attention is None:
        return None
    if found := _MISSING.match(view.attention):
        return t.gettext(N_("%(variable)s is empty for this contact and has no fallback. Fill it"
                            " in on the contact, then retry."),
                         variable="{{" + found["variable"] + "}}")
    return Markup.escape(view.attention)


async def _enrollment(request: Request, enrollment_id: uuid.UUID):
    view = EnrollmentView.model_validate(
        await ask(request, c.GetEnrollment, enrollment_id=enrollment_id))
    sequence = SequenceView.model_validate(
        await ask(request, c.GetSequence, sequence_id=view.sequence_id))
    return view, sequence


@router.get("/enrollments/{enrollment_id}")
async def timeline(request: Request, user: SignedIn, enrollment_id: uuid.UUID):
    view, sequence = await _enrollment(request, enrollment_id)
    found = Timeline.model_validate(await ask(request, c.GetTimeline,
                                              enrollment_id=enrollment_id))
    t = texts_for(request)
    entries = [(entry, sentence(entry, t)) for entry in found.entries]
    by_id = {entry.event_id: words for entry, words in entries}
    return render(request, "timeline/show.html", enrollment=view, sequence=sequence,
                  entries=entries, causes=by_id, attention=attention(view, t),
                  other_zone=sequence.timezone != t.zone.key)


_STOPPABLE = (EnrollmentStatus.active, EnrollmentStatus.needs_attention)


@router.get("/enrollments/{enrollment_id}/stop")
async def confirm_stop(request: Request, user: SignedIn, enrollment_id: uuid.UUID):
    """Stopping ends the enrollment for good: asked first, on a page of its own."""
    view, sequence = await _enrollment(request, enrollment_id)
    return render(request, "timeline/confirm_stop.html", enrollment=view, sequence=sequence,
                  stoppable=view.status in _STOPPABLE, errors={}, reason="")


@router.post("/enrollments/{enrollment_id}/stop")
async def stop(request: Request, user: SignedIn, enrollment_id: uuid.UUID,
               reason: Annotated[str, Form(max_length=5000)] = ""):
    try:
        body = c.StopRequest(reason=reason.strip() or None)
    except ValidationError as error:
        view, sequence = await _enrollment(request, enrollment_id)
        return render(request, "timeline/confirm_stop.html", status_code=422, enrollment=view,
                      sequence=sequence, stoppable=True, reason=reason,
                      errors=validation_errors(error, texts_for(request).gettext))
    await ask(request, c.StopEnrollment, enrollment_id=enrollment_id, reason=body.reason)
    return RedirectResponse(f"/enrollments/{enrollment_id}", status_code=303)


@router.post("/enrollments/{enrollment_id}/retry")
async def retry(request: Request, user: SignedIn, enrollment_id: uuid.UUID):
    """Try the held step again (after the contact or the mailbox was fixed)."""
    await ask(request, c.RetryEnrollment, enrollment_id=enrollment_id)
    return RedirectResponse(f"/enrollments/{enrollment_id}", status_code=303)
