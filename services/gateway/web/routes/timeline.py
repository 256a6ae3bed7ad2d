"""The enrollment timeline: one enrollment (its contact, sequence, status, current step, next
send or why it is held) and every event of it in words, with what caused each: the answer to
"why did (or didn't) this email go out?". Stopping (asked first) and retrying a held step.

Each event type has a sentence of the catalog, filled from the event's data (a service's reason
from the text it carries, contracts/texts.py); a type without one (or data of an unexpected
shape) shows the service's English summary."""

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
from contracts.texts import BOUNCE_REASON_WORDS, Text, missing_variable
from contracts.views import EnrollmentStatus, EnrollmentView, SequenceView, Timeline, TimelineEntry
from sequences.i18n import N_
from services.gateway.web.forms import validation_errors
from services.gateway.web.pages import ask, page_router
from services.gateway.web.session import SignedIn
from services.gateway.web.templating import PAUSED, Texts, render, texts_for

router = page_router()

# the mailer's reason when a merge variable is empty and has no fallback, as events written
# before they carried texts say it (the enrollment service repeats it: "step 3 not sent: ...")
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


def _text(data: dict, key: str = "reason_text") -> Text | None:
    return Text.model_validate(data[key]) if data.get(key) else None


def _reason(d: dict, t: Texts) -> str:
    """The event's reason in the reader's language (its English if it carried no text)."""
    return t.say(_text(d), d.get("reason"))


def _missing(text: Text | None, english: str | None) -> str | None:
    """The empty merge variable (`{{직함}}`) that held a step, if that is what held it."""
    if text is not None:
        return missing_variable(text)
    found = _MISSING.match(english or "")
    return "{{" + found["variable"] + "}}" if found else None


def _held(d: dict, t: Texts, missing: str, other: str) -> tuple[str, dict]:
    if variable := _missing(_text(d), d["reason"]):
        return missing, {"variable": variable}
    return other, {"reason": _reason(d, t)}


def _enrolled(d: dict, t: Texts):
    values = {"attempt": d.get("attempt", 1), "email": d["email"],
              "zone": d.get("contact_timezone")}
    if values["zone"] and values["attempt"] > 1:
        return N_("Enrolled again (attempt %(attempt)s, %(email)s); their timezone:"
                  " %(zone)s"), values
    if values["zone"]:
        return N_("Enrolled (%(email)s); their timezone: %(zone)s"), values
    if values["attempt"] > 1:
        return N_("Enrolled again (attempt %(attempt)s, %(email)s)"), values
    return N_("Enrolled (%(email)s)"), values


def _scheduled(d: dict, t: Texts):
    values = {"step": _step(d), "when": _moment(d["due_at"], t)}
    if d.get("held"):
        return N_("Step %(step)s planned for %(when)s, held while the sequence is paused"), values
    if d.get("reason"):
        return N_("Step %(step)s moved to %(when)s: %(reason)s"), {**values,
                                                                  "reason": _reason(d, t)}
    if d.get("zone"):
        values["when"] = t.when(datetime.fromisoformat(d["due_at"]), d["zone"])
    if d.get("moved"):
        return N_("Step %(step)s planned for %(when)s (%(zone)s): %(why)s"), {
            **values, "zone": d.get("zone") or "", "why": t.moves(d["moved"])}
    return N_("Step %(step)s planned for %(when)s"), values


def _reply(d: dict, t: Texts):
    """The reply's words and, when the event has one (not those before intents), its intent."""
    excerpt = " ".join(str(d.get("excerpt") or "").split())
    if len(excerpt) > 120:
        excerpt = excerpt[:119] + "…"
    values = {"sender": d["sender"], "excerpt": excerpt}
    if d.get("intent"):
        values["intent"] = t.intent_name(d["intent"])
        return (N_("Reply from %(sender)s (%(intent)s): “%(excerpt)s”") if excerpt
                else N_("Reply from %(sender)s (%(intent)s)")), values
    return (N_("Reply from %(sender)s: “%(excerpt)s”") if excerpt
            else N_("Reply from %(sender)s")), values


# the sequence's A/B winner (it decides which variant this enrollment's later emails are)
_WINNER = {
    ("hand", True): N_("A/B winner: variant %(letter)s, chosen by %(who)s; new emails use it"),
    ("hand", False): N_("A/B winner: variant %(letter)s, chosen by hand; new emails use it"),
    ("automatic", False): N_("A/B winner: variant %(letter)s, chosen automatically (its reply"
                             " rate was significantly better); new emails use it"),
}
_WINNER[("automatic", True)] = _WINNER[("automatic", False)]

_TASK_DUE = {"call": N_("A call task for %(owner)s"), "sms": N_("An SMS task for %(owner)s")}
_TASK_DONE = {("done", False): N_("Task done"), ("done", True): N_("Task done: “%(note)s”"),
              ("skipped", False): N_("Task skipped"),
              ("skipped", True): N_("Task skipped: “%(note)s”")}


def _task_due(d: dict, t: Texts):
    owner = d.get("owner_name") or t.gettext(N_("the owner"))
    return _TASK_DUE[d["channel"]], {"owner": owner}


def _task_completed(d: dict, t: Texts):
    note = " ".join(str(d.get("note") or "").split())
    return _TASK_DONE[(d["outcome"], bool(note))], {"note": note}


def _bounce(d: dict, t: Texts):
    values = {"recipient": d["recipient"], "status": d.get("status") or "–"}
    sentence = _BOUNCE_CLASSES.get(d.get("bounce_class") or "unknown")
    if sentence is None:  # recorded before bounces had a class: its kind says it all
        return (N_("Hard bounce of %(recipient)s (%(status)s): the address takes no mail")
                if d["kind"] == "hard" else
                N_("Soft bounce of %(recipient)s (%(status)s): refused for now")), values
    reason = BOUNCE_REASON_WORDS.get(d.get("reason") or "", BOUNCE_REASON_WORDS["unclassified"])
    return sentence, {**values, "reason": t.gettext(reason)}


# what the bounce classifier decided (sequences/bounce_reasons.py), in words
_BOUNCE_CLASSES = {
    "recipient-permanent": N_("Hard bounce of %(recipient)s (%(status)s): %(reason)s; the"
                              " address takes no mail"),
    "recipient-temporary": N_("Soft bounce of %(recipient)s (%(status)s): %(reason)s; refused"
                              " for now"),
    "sender-side": N_("Bounce of %(recipient)s (%(status)s): %(reason)s; refused because of the"
                      " sender, not the address"),
    "content-side": N_("Bounce of %(recipient)s (%(status)s): %(reason)s; refused because of"
                       " the message, not the address"),
}


_SENTENCES: dict[str, Callable[[dict, Texts], tuple[str, dict]]] = {
    "ContactEnrolled": _enrolled,
    "StepScheduled": _scheduled,
    "StepDue": lambda d, t: (_CHANNEL_DUE[d["channel"]], {"step": _step(d)}),
    "EmailSent": lambda d, t: (N_("Email step %(step)s sent to %(to)s (%(subject)s)"), {
        "step": _step(d), "to": d["recipient"], "subject": d["subject"]}),
    "EmailOpened": lambda d, t: (
        (N_("The email was opened by a machine (%(rule)s)"), {"rule": d["machine_rule"]})
        if d.get("machine") else (N_("The email was opened"), {})),
    "EmailClicked": lambda d, t: (
        (N_("A link was followed by a machine (%(rule)s): %(url)s"),
         {"rule": d["machine_rule"], "url": d["url"]})
        if d.get("machine") else (N_("A link was followed: %(url)s"), {"url": d["url"]})),
    "VariantAssigned": lambda d, t: (N_("A/B variant %(letter)s assigned"),
                                     {"letter": d["letter"]}),
    "VariantWinnerChosen": lambda d, t: (_WINNER[(d["by"], bool(d.get("chosen_by")))], {
        "letter": d["letter"], "who": d.get("chosen_by") or ""}),
    "EmailHeld": lambda d, t: _held(d, t, N_("Held: %(variable)s is empty for this contact"),
                                    N_("Held: %(reason)s")),
    "EmailFailed": lambda d, t: (N_("Email step %(step)s could not be sent (%(attempts)s"
                                    " attempts): %(reason)s"), {
        "step": _step(d), "attempts": d["attempts"], "reason": d["reason"]}),
    "EmailDeferred": lambda d, t: (N_("Sending deferred until %(when)s: %(reason)s"), {
        "when": _moment(d["until"], t), "reason": _reason(d, t)}),
    "EnrollmentNeedsAttention": lambda d, t: _held(
        d, t, N_("Needs attention: %(variable)s is empty for this contact and has no"
                        " fallback. Fill it in on the contact, then retry."),
        N_("Needs attention: %(reason)s")),
    "EnrollmentRetried": lambda d, t: (N_("The held step was tried again"), {}),
    "EnrollmentContactZoneChanged": lambda d, t: (
        (N_("The contact's timezone is now %(zone)s"), {"zone": d["contact_timezone"]})
        if d.get("contact_timezone") else (N_("The contact's timezone was cleared"), {})),
    "EnrollmentStepCompleted": lambda d, t: (_CHANNEL_DONE[d["channel"]], {"step": _step(d)}),
    "EnrollmentCompleted": lambda d, t: (N_("Done: every step ran"), {}),
    "TaskDue": _task_due,
    "TaskCompleted": _task_completed,
    "ReplyDetected": _reply,
    "AutoReplyDetected": lambda d, t: (N_("Out-of-office reply from %(sender)s: not counted as a"
                                          " reply (%(reason)s)"), {
        "sender": d["sender"], "reason": d["reason"]}),
    "EnrollmentReplied": lambda d, t: (N_("Replied — the enrollment stopped"), {}),
    "EnrollmentPaused": lambda d, t: (PAUSED, t.pause_values(d["until"], d["reason"])),
    "EnrollmentResumed": lambda d, t: (N_("Resumed by %(by)s"), {"by": d["by"]}),
    "BounceDetected": _bounce,
    "EnrollmentBounced": lambda d, t: (N_("Bounced — the enrollment stopped: %(reason)s"), {
        "reason": _reason(d, t)}),
    "EnrollmentStopped": lambda d, t: ((N_("Stopped: %(reason)s"), {"reason": _reason(d, t)})
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
    if variable := _missing(view.attention_text, view.attention):
        return t.gettext(N_("%(variable)s is empty for this contact and has no fallback. Fill it"
                            " in on the contact, then retry."), variable=variable)
    return Markup.escape(t.say(view.attention_text, view.attention))


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


@router.post("/enrollments/{enrollment_id}/resume")
async def resume(request: Request, user: SignedIn, enrollment_id: uuid.UUID):
    """End a pause (out of office, a colleague's reply) now: the next step is planned."""
    await ask(request, c.ResumeEnrollment, enrollment_id=enrollment_id, by=user.email)
    return RedirectResponse(f"/enrollments/{enrollment_id}", status_code=303)


@router.post("/enrollments/{enrollment_id}/retry")
async def retry(request: Request, user: SignedIn, enrollment_id: uuid.UUID):
    """Try the held step again (after the contact or the mailbox was fixed)."""
    await ask(request, c.RetryEnrollment, enrollment_id=enrollment_id)
    return RedirectResponse(f"/enrollments/{enrollment_id}", status_code=303)
