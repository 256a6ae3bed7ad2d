"""The sequence builder (new and edit), each email step's Preview and Send test to me, and what
the detail page's Settings tab shows (`templates/builder/_settings.html`).

The builder is one form. Every button of it is a submit button (`action=add_step`,
`remove:2`, `up:1`, `down:0`, `save`): the server rebuilds what the user typed from the posted
fields, applies the action and shows the form again, so it works without script; with htmx the
same form swaps itself. Only `save` goes through the contract model and to the service.

The edit page changes a saved sequence's settings (`ChangeSequenceSettings`: a new window,
holidays or zone mode re-plans enrollees' pending steps) and its steps (`ChangeSequenceSteps`)."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Annotated, Any
from zoneinfo import available_timezones

from fastapi import Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from contracts import commands as c
from contracts.base import Problem
from contracts.values import SendWindow
from contracts.views import (ContactPage, MailboxView, SequenceView, StepPreview,
                             WorkspaceCalendarView)
from services.gateway.bus import ProblemError
from services.gateway.web import forms, holiday_choices
from services.gateway.web.pages import ask, error_page, page_router
from services.gateway.web.session import SignedIn
from services.gateway.web.templating import language_of, render, texts_for
from sequences.i18n import N_
from sequences.messaging import rpc

router = page_router()

VARIABLES = ("고객명", "회사명", "직함", "담당자명")
TIMEZONES = tuple(sorted(available_timezones()))
CHANNELS = ("email", "sms", "call")
MAX_STEPS = 50
MAX_VARIANTS = 3  # A, B, C (contracts/values.py)
_STEP_FIELDS = ("step_id", "channel", "subject", "body", "wait_days", "wait_unit")
_VARIANT_FIELDS = ("subject", "body", "weight")
CONTACTS_SHOWN = 10
# the fields of a sequence besides its steps, as the form (and the API) names them
SETTINGS = ("name", "purpose", "sender_name", "sender_email", "timezone", "language",
            "zone_mode")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
BLOCK_ROWS = 3  # time blocks the form offers (a day rarely needs more)
_DAYS_FIELD = "send_policy.window.days"
_POOL_FIELD = "mailbox_pool"  # checkboxes: the workspace's mailboxes the sequence sends from


# --- what the user typed, as the form shows it ---------------------------------------------------

def _blank_step(first: bool) -> dict[str, Any]:
    return {"step_id": "", "channel": "email", "subject": "", "body": "",
            "wait_days": "0" if first else "2", "wait_unit": "days", "variants": []}


# A step's A/B variants as the form holds them: variant A is the step's own subject and message
# (its entry has only a weight), B and C have fields of their own. Every variant's text is what
# the contract's `variants` get; the step's own subject and body are A's.

def _step_of(posted: dict) -> dict[str, Any]:
    variants = posted.get("variants") if isinstance(posted.get("variants"), list) else []
    return {**{key: _text(posted.get(key)) for key in _STEP_FIELDS},
            "variants": [{key: _text(v.get(key)) for key in _VARIANT_FIELDS}
                         for v in variants[:MAX_VARIANTS] if isinstance(v, dict)]}


def _even_weights(variants: list[dict]) -> None:
    """Adding or removing a variant splits the enrollments evenly again (50/50, 34/33/33)."""
    share, left = divmod(100, len(variants))
    for index, variant in enumerate(variants):
        variant["weight"] = str(share + (1 if index < left else 0))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _draft(pairs) -> dict[str, Any]:
    """The posted fields as the form shows them again: every value a string, the steps in
    their order (gaps in the indexes close up)."""
    pairs = list(pairs)
    days = [v for k, v in pairs if k == _DAYS_FIELD and v in WEEKDAYS]
    pool = [v.strip().lower() for k, v in pairs if k == _POOL_FIELD and v.strip()]
    posted = forms.nested((k, v) for k, v in pairs
                          if k not in ("csrf_token", "action", _DAYS_FIELD, _POOL_FIELD))
    policy = posted.get("send_policy") if isinstance(posted.get("send_policy"), dict) else {}
    window = policy.get("window") if isinstance(policy.get("window"), dict) else {}
    blocks = window.get("blocks") if isinstance(window.get("blocks"), list) else []
    holidays = posted.get("holidays") if isinstance(posted.get("holidays"), dict) else {}
    account = posted.get("on_account_reply") \
        if isinstance(posted.get("on_account_reply"), dict) else {}
    steps = posted.get("steps") if isinstance(posted.get("steps"), list) else []
    return {
        **{name: _text(posted.get(name)) for name in SETTINGS},
        "send_policy": {"mode": _text(policy.get("mode")),
                        "send_time": _text(policy.get("send_time")), "days": days,
                        "blocks": [{"start": _text(b.get("start")), "end": _text(b.get("end"))}
                                   for b in blocks[:BLOCK_ROWS] if isinstance(b, dict)]},
        "holidays": {key: _text(holidays.get(key)) for key in ("choice", "country", "subdivision")},
        "on_account_reply": {key: _text(account.get(key)) for key in ("action", "pause_days")},
        "steps": [_step_of(step) for step in steps[:MAX_STEPS] if isinstance(step, dict)],
        "mailbox_pool": pool,
    }


def _draft_of(sequence: SequenceView) -> dict[str, Any]:
    policy, holidays = sequence.send_policy, sequence.holidays
    return {
        **{name: getattr(sequence, name) or "" for name in SETTINGS},
        "send_policy": {"mode": policy.mode, "send_time": policy.send_time or "",
                        "days": list(policy.window.days) if policy.window else [],
                        "blocks": [b.model_dump() for b in policy.window.blocks]
                        if policy.window else []},
        "holidays": {"choice": holidays if isinstance(holidays, str) else "calendar",
                     "country": "" if isinstance(holidays, str) else holidays.country,
                     "subdivision": "" if isinstance(holidays, str)
                     else holidays.subdivision or ""},
        "steps": [_saved_step(s) for s in sequence.steps],
        "mailbox_pool": list(sequence.mailbox_pool),
        "on_account_reply": {"action": sequence.on_account_reply.action,
                             "pause_days": str(sequence.on_account_reply.pause_days)},
    }


def _saved_step(step) -> dict[str, Any]:
    """A saved step as the form shows it; with variants, A's text is the step's own fields."""
    first = step.variants[0] if step.variants else step
    return {"step_id": str(step.step_id), "channel": step.channel.value,
            "subject": first.subject or "", "body": first.body,
            "wait_days": str(step.wait_days), "wait_unit": step.wait_unit,
            "variants": [{"subject": "" if i == 0 else v.subject or "",
                          "body": "" if i == 0 else v.body, "weight": str(v.weight)}
                         for i, v in enumerate(step.variants)]}


def _new_draft(request: Request, user, window: SendWindow | None = None) -> dict[str, Any]:
    """A new sequence's form: at 09:00 on the due day, or in the workspace's default window
    (Settings › Calendar) when it has one."""
    send_policy = {"mode": "send_time", "send_time": "09:00", "days": list(WEEKDAYS[:5]),
                   "blocks": [{"start": "09:00", "end": "17:00"}]}
    if window is not None:
        send_policy = {"mode": "window", "send_time": "", "days": list(window.days),
                       "blocks": [b.model_dump() for b in window.blocks]}
    return {"name": "", "purpose": "", "sender_name": user.name, "sender_email": user.email,
            "timezone": user.timezone or "Asia/Seoul", "language": texts_for(request).language,
            "zone_mode": "sequence", "holidays": {"choice": "workspace", "country": "",
                                                  "subdivision": ""},
            "send_policy": send_policy, "steps": [_blank_step(True)], "mailbox_pool": [],
            "on_account_reply": {"action": "stop", "pause_days": "14"}}


_ACTION = re.compile(r"^(save|add_step|remove|up|down|add_variant|remove_variant)"
                     r"(?::(\d{1,3})(?:\.(\d))?)?$")


def _apply(action: str, steps: list[dict]) -> str | None:
    """Apply a button of the form to the steps; the id of what should have the focus after."""
    found = _ACTION.match(action or "")
    if not found:
        return None
    verb, index = found[1], int(found[2]) if found[2] is not None else None
    if verb in ("add_variant", "remove_variant"):
        if index is None or not 0 <= index < len(steps):
            return None
        return _apply_variant(verb, index, int(found[3]) if found[3] else None, steps[index])
    if verb == "add_step":
        if len(steps) >= MAX_STEPS:
            return "add-step"
        steps.append(_blank_step(not steps))
        return f"f-steps-{len(steps) - 1}-channel"
    if index is None or not 0 <= index < len(steps):
        return None
    if verb == "remove":
        steps.pop(index)
        return f"step-{min(index, len(steps) - 1)}-title" if steps else "add-step"
    target = index - 1 if verb == "up" else index + 1
    if not 0 <= target < len(steps):
        return f"step-{index}-title"
    steps[index], steps[target] = steps[target], steps[index]
    return f"step-{target}-title"


def _apply_variant(verb: str, index: int, letter: int | None, step: dict) -> str | None:
    """Add a variant to an email step (the first makes two: A, its own text, and a blank B),
    or remove B or C (removing one of two leaves the step without variants)."""
    variants = step["variants"]
    if verb == "add_variant":
        if step["channel"] != "email" or len(variants) >= MAX_VARIANTS:
            return f"f-steps-{index}-variants"
        if not variants:
            variants.append({"subject": "", "body": "", "weight": ""})
        variants.append({"subject": "", "body": "", "weight": ""})
        _even_weights(variants)
        return f"f-steps-{index}-variants-{len(variants) - 1}-subject"
    if letter is None or not 1 <= letter < len(variants):
        return None  # A is the step's own text: it goes with the step
    variants.pop(letter)
    if len(variants) < 2:
        variants.clear()
    else:
        _even_weights(variants)
    return f"f-steps-{index}-variants"


def _variants_body(step: dict) -> list[dict]:
    """The contract's variants: A from the step's own fields, blanks as absent."""
    body = []
    for index, variant in enumerate(step["variants"]):
        subject, text = (step["subject"], step["body"]) if index == 0 else (
            variant["subject"], variant["body"])
        item = {"body": text, "weight": variant["weight"].strip()}
        if subject.strip():
            item["subject"] = subject
        body.append(item)
    return body


def _steps_body(steps: list[dict]) -> list[dict]:
    """The steps as the contract takes them: a subject only on email steps (a hidden subject
    field of an SMS step is not the user's meaning), blanks as absent, ids kept."""
    body = []
    for step in steps:
        item = {"channel": step["channel"], "body": step["body"],
                "wait_days": step["wait_days"].strip(), "wait_unit": step["wait_unit"] or "days"}
        if step["channel"] == "email" and step["subject"].strip():
            item["subject"] = step["subject"]
        if step["step_id"]:
            item["step_id"] = step["step_id"]
        if step["variants"]:
            item["variants"] = _variants_body(step)
        body.append(item)
    return body


def _settings_body(draft: dict) -> dict:
    """The settings as the contract takes them (every field of the definition but the steps)."""
    policy = draft["send_policy"]
    send_policy: dict[str, Any] = {"mode": policy["mode"]}
    if policy["mode"] == "window":
        send_policy["window"] = {"days": policy["days"], "blocks": [
            {"start": b["start"].strip(), "end": b["end"].strip()} for b in policy["blocks"]
            if b["start"].strip() or b["end"].strip()]}
    elif policy["mode"] != "as_soon_as_due":
        send_policy["send_time"] = policy["send_time"].strip() or None
    holidays = draft["holidays"]
    choice: Any = holidays["choice"] or "workspace"
    if choice == "calendar":
        country = holidays["country"].strip().upper()
        choice = {"country": country, "subdivision": holiday_choices.subdivision_code(
            country, holidays["subdivision"])}
    return {
        "name": draft["name"].strip(), "purpose": draft["purpose"].strip() or None,
        "sender_name": draft["sender_name"].strip(), "sender_email": draft["sender_email"].strip(),
        "timezone": draft["timezone"].strip(), "language": draft["language"] or "en",
        "send_policy": send_policy, "holidays": choice,
        "zone_mode": draft["zone_mode"] or "sequence",
        "mailbox_pool": draft.get("mailbox_pool", []),
        "on_account_reply": _account_reply_body(draft.get("on_account_reply") or {}),
    }


def _account_reply_body(fields: dict) -> dict:
    """A pause's days as typed (the contract says what is wrong with them), only for a pause."""
    action = fields.get("action") or "stop"
    if action != "pause":
        return {"action": action}
    days = (fields.get("pause_days") or "").strip()
    return {"action": action, "pause_days": int(days) if days.isdigit() else days}


def _definition_body(draft: dict) -> dict:
    return {**_settings_body(draft), "steps": _steps_body(draft["steps"])}


# --- refusals in the reader's words, next to the field they are about ---------------------------

_UNKNOWN_VARIABLE = re.compile(r"unknown merge variable \{\{(?P<name>.*)\}\} at position "
                               r"(?P<position>\d+)")
_VARIANT_NEEDS_SUBJECT = re.compile(r"variant (?P<letters>[ABC](, [ABC])*) needs a subject")
# (field pattern, message pattern) -> our message; the field may be moved (None: keep it)
_KNOWN = [
    (r"steps\[\d+\](\.variants\[\d+\])?\.(body|subject)", _UNKNOWN_VARIABLE,
     N_("Unknown variable {{%(name)s}} at position %(position)s: use {{고객명}}, {{회사명}},"
        " {{직함}} or {{담당자명}}.")),
    (r".*", re.compile(r"must be a single line"), N_("One line only, without line breaks.")),
    (r"steps", re.compile(r"first email step needs a subject"),
     N_("The first email step needs a subject: it starts the email thread.")),
    (r"send_policy", re.compile(r"send_time \(HH:MM\) is required"),
     N_("Enter a send time, or choose “As soon as due”.")),
    (r"send_policy\.send_time", re.compile(r"should match pattern"),
     N_("Enter a time as HH:MM, e.g. 09:30.")),
    (r"timezone", re.compile(r"unknown timezone"),
     N_("Unknown timezone: choose one from the list, e.g. Asia/Seoul.")),
    (r"sender_email", re.compile(r"not a valid email address"), N_("Enter an email address.")),
    (r"steps", re.compile(r"at least 1 item"), N_("Add at least one step.")),
    (r"steps\[\d+\]\.channel", re.compile(r"Input should be"),
     N_("Choose email, SMS or call.")),
    (r"send_policy\.mode", re.compile(r"Input should be"),
     N_("Choose a send time or “As soon as due”.")),
    (r"language", re.compile(r"Input should be"), N_("Choose Korean or English.")),
    (r"(send_policy\.window|send_window)\.blocks.*", re.compile(r"overlap"),
     N_("Time blocks may not overlap.")),
    (r"(send_policy\.window|send_window)\.blocks.*", re.compile(r"before or when it starts"),
     N_("A block must end after it starts.")),
    (r"(send_policy\.window|send_window)\.blocks.*", re.compile(r"should match pattern"),
     N_("Enter times as HH:MM, from 00:00 to 23:59 (24:00 is not a time).")),
    (r"(send_policy\.window|send_window)\.blocks", re.compile(r"at least 1 item"),
     N_("Add at least one time block.")),
    (r"(send_policy\.window|send_window)\.days", re.compile(r"at least 1 item"),
     N_("Choose at least one sending day.")),
    (r"send_policy", re.compile(r"window \(days and blocks\) is required"),
     N_("Choose the sending days and time blocks.")),
    (r"holidays(\.\w+)?", re.compile(r"unknown holiday country"),
     N_("Unknown country: use a code such as KR, US, JP or DE.")),
    (r"holidays(\.\w+)?", re.compile(r"unknown subdivision"),
     N_("Unknown subdivision of this country (e.g. CA for US, BY for DE); leave it empty for"
        " the whole country.")),
    (r"send_policy\.window|holidays|skip_dates", re.compile(r"no sending day"),
     N_("With these days, holidays and skip dates no day in the next 366 days can send.")),
    (r"steps\[\d+\]\.variants", re.compile(r"weights of the variants must add up to 100"),
     N_("The weights of the variants must add up to 100.")),
    (r"steps\[\d+\]\.variants", _VARIANT_NEEDS_SUBJECT,
     N_("Enter a subject: this step starts an email thread, so every variant needs one.")),
    (r"steps\[\d+\]\.variants", re.compile(r"only email steps take variants"),
     N_("Only email steps have A/B variants: remove the variants or choose Email.")),
    (r"steps\[\d+\]\.variants", re.compile(r"2 to 3 of them"),
     N_("A step has 2 or 3 variants.")),
    (r"steps\[\d+\]\.variants\[\d+\]\.weight", re.compile(r"."),
     N_("Enter a whole number from 1 to 100.")),
    (r"steps\[\d+\]\.wait_unit", re.compile(r"Input should be"),
     N_("Choose days or business days.")),
    (r"zone_mode", re.compile(r"Input should be"),
     N_("Choose the sequence's timezone or each contact's.")),
    (r"on_account_reply\.pause_days", re.compile(r"."),
     N_("Enter a number of days from 1 to 90.")),
    (r"on_account_reply", re.compile(r"Input should be"),
     N_("Choose stop, pause or continue.")),
    # the service's refusals of a change
    (r".*", re.compile(r"the sequence is archived"),
     N_("This sequence is archived: its steps can no longer be changed.")),
    (r".*", re.compile(r"changed by someone else meanwhile"),
     N_("Someone changed this sequence meanwhile: reload the page and make your change again.")),
]
_REQUIRED = N_("This field is required.")


_VARIANT_FIELD = re.compile(r"steps\[(?P<step>\d+)\]\.variants(?:\[(?P<index>\d+)\]"
                            r"(?:\.(?P<part>\w+))?)?")


def _moved(field: str, message: str, body: dict) -> str:
    """A rule about the whole list or policy, shown at the field the user fixes."""
    if field == "steps" and "first email step" in message:
        first = next((i for i, s in enumerate(body.get("steps", [])) if s["channel"] == "email"), 0)
        return f"steps[{first}].subject"
    if field == "send_policy" and "send_time" in message:
        return "send_policy.send_time"
    if field == "send_policy" and "window" in message:
        return "send_policy.window.days"
    if variant := _VARIANT_FIELD.fullmatch(field):
        if variant["index"] == "0" and variant["part"] in ("subject", "body"):
            return f"steps[{variant['step']}].{variant['part']}"  # A is the step's own text
        if variant["part"] is None and (letters := _VARIANT_NEEDS_SUBJECT.search(message)):
            first = "ABC".index(letters["letters"][0])
            return f"steps[{variant['step']}].variants[{first}].subject"
    for blocks in ("send_policy.window.blocks", "send_window.blocks"):
        if field.startswith(blocks):
            return blocks  # shown once, under the blocks
    return field


def _ours(field: str, message: str, gettext) -> str | None:
    for field_pattern, message_pattern, ours in _KNOWN:
        if re.fullmatch(field_pattern, field) and (found := message_pattern.search(message)):
            return str(gettext(ours)) % found.groupdict()
    return None


def builder_errors(error: ValidationError, body: dict, gettext, prefix: str = "") -> dict:
    """The contract's refusal of the form: `{field: message}` in the reader's language."""
    baseline = forms.validation_errors(error, gettext)
    problem = rpc.problem_from_validation(error)
    found: dict[str, str] = {}
    for detail, field_error in zip(error.errors(), problem.errors):
        field = prefix + field_error.field
        text = _ours(field_error.field, field_error.message, gettext)
        if text is None and detail["type"] in ("string_too_short", "too_short") and (
                detail.get("ctx") or {}).get("min_length") == 1:
            text = str(gettext(_REQUIRED))  # an empty field, as the reader sees it
        if text is None:
            text = baseline.get(field_error.field, field_error.message)
        found.setdefault(_moved(field, field_error.message, body), text)
    return found


def service_errors(problem: Problem, body: dict, gettext) -> dict:
    """A service's refusal (in English) as ours where we know it, else as it came."""
    found: dict[str, str] = {}
    for field, message in forms.errors_of(problem).items():
        where = field if field in ("", "steps", "holidays") or field.startswith(
            ("steps[", "send_policy", "on_account_reply")) or field in SETTINGS else ""
        found.setdefault(_moved(where, message, body), _ours(where, message, gettext) or message)
    return found


# --- the pages ----------------------------------------------------------------------------------

async def _builder(request: Request, *, draft: dict, sequence: SequenceView | None = None,
                   errors: dict | None = None, focus: str | None = None,
                   status_code: int = 200):
    """The builder page, or only its form when htmx posted it. The mailbox picker offers the
    workspace's connected mailboxes."""
    partial = request.headers.get("hx-request") == "true" and request.method == "POST"
    saved = {str(s.step_id) for s in sequence.steps} if sequence else set()
    mailboxes = [MailboxView.model_validate(m) for m in await ask(request, c.ListMailboxes)]
    return render(request, "builder/_form.html" if partial else "builder/page.html",
                  status_code=status_code, draft=draft, sequence=sequence, errors=errors or {},
                  focus=focus, timezones=TIMEZONES, variables=VARIABLES, channels=CHANNELS,
                  saved_steps=saved, max_steps=MAX_STEPS, weekdays=WEEKDAYS,
                  block_rows=BLOCK_ROWS, mailboxes=mailboxes,
                  countries=holiday_choices.countries(language_of(request)),
                  subdivisions=holiday_choices.subdivisions(draft["holidays"]["country"]))


def _saved(request: Request, location: str):
    if request.headers.get("hx-request") == "true":
        return HTMLResponse("", headers={"HX-Redirect": location})
    return RedirectResponse(location, status_code=303)


async def _sequence(request: Request, sequence_id: uuid.UUID) -> SequenceView:
    return SequenceView.model_validate(await ask(request, c.GetSequence, sequence_id=sequence_id))


@router.get("/sequences/new")
async def new_sequence(request: Request, user: SignedIn):
    calendar = WorkspaceCalendarView.model_validate(await ask(request, c.GetWorkspaceCalendar))
    return await _builder(request, draft=_new_draft(request, user, calendar.send_window))


@router.post("/sequences/new")
async def new_sequence_submit(request: Request, user: SignedIn):
    form = await request.form()
    draft = _draft(form.multi_items())
    action = _text(form.get("action"))
    if action != "save":
        focus = _apply(action, draft["steps"])
        return await _builder(request, draft=draft, focus=focus)
    gettext = texts_for(request).gettext
    body = _definition_body(draft)
    try:
        definition = c.SequenceDefinition.model_validate(body)
    except ValidationError as error:
        return await _builder(request, draft=draft, errors=builder_errors(error, body, gettext),
                        focus="builder-errors", status_code=422)
    try:
        created = await ask(request, c.CreateSequence, **definition.model_dump())
    except ProblemError as refused:
        if refused.problem.status not in (409, 422):
            raise
        return await _builder(request, draft=draft, status_code=422, focus="builder-errors",
                        errors=service_errors(refused.problem, body, gettext))
    return _saved(request, f"/sequences/{created['id']}")


@router.get("/sequences/{sequence_id}/edit")
async def edit_sequence(request: Request, user: SignedIn, sequence_id: uuid.UUID):
    sequence = await _sequence(request, sequence_id)
    return await _builder(request, draft=_draft_of(sequence), sequence=sequence)


@router.post("/sequences/{sequence_id}/edit")
async def edit_sequence_submit(request: Request, user: SignedIn, sequence_id: uuid.UUID):
    sequence = await _sequence(request, sequence_id)
    form = await request.form()
    draft = _draft(form.multi_items())
    action = _text(form.get("action"))
    if action != "save":
        return await _builder(request, draft=draft, sequence=sequence,
                        focus=_apply(action, draft["steps"]))
    gettext = texts_for(request).gettext
    body = _definition_body(draft)
    try:  # the whole definition is checked first: nothing is written when any field is wrong
        c.SequenceDefinition.model_validate(body)
        changes = c.SequenceSettingsChanges.model_validate(_settings_body(draft))
        steps = c.StepsRequest.model_validate({"steps": body["steps"]}).steps
    except ValidationError as error:
        return await _builder(request, draft=draft, sequence=sequence, focus="builder-errors",
                        errors=builder_errors(error, body, gettext), status_code=422)
    try:
        await ask(request, c.ChangeSequenceSettings, sequence_id=sequence_id, changes=changes)
        await ask(request, c.ChangeSequenceSteps, sequence_id=sequence_id, steps=steps)
    except ProblemError as refused:
        if refused.problem.status not in (409, 422):
            raise
        return await _builder(request, draft=draft, sequence=sequence, status_code=422,
                        focus="builder-errors",
                        errors=service_errors(refused.problem, body, gettext))
    return _saved(request, f"/sequences/{sequence_id}")


# --- preview and send test to me ----------------------------------------------------------------

_MAILER_CATCH_UP = 5.0  # seconds: the mailer learns of new steps from their event a moment later


async def _preview(request: Request, sequence_id: uuid.UUID, step_id: uuid.UUID,
                   contact_id: uuid.UUID | None) -> StepPreview:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _MAILER_CATCH_UP
    while True:
        try:
            return StepPreview.model_validate(await ask(
                request, c.PreviewStep, sequence_id=sequence_id, step_id=step_id,
                contact_id=contact_id))
        except ProblemError as refused:
            fields = [e.field for e in refused.problem.errors]
            if refused.problem.status != 404 or fields != ["step_id"] or loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _preview_page(request: Request, sequence_id: uuid.UUID, step_id: uuid.UUID,
                        contact_id: uuid.UUID | None, q: str | None, status_code: int = 200,
                        sent_to: str | None = None, error: str | None = None):
    sequence = await _sequence(request, sequence_id)
    index, step = next(((i, s) for i, s in enumerate(sequence.steps) if s.step_id == step_id),
                       (None, None))
    if step is None or step.channel != "email":
        return error_page(request, 404)
    contacts = ContactPage.model_validate(await ask(
        request, c.ListContacts, q=q or None, page=c.Page(limit=CONTACTS_SHOWN)))
    preview = await _preview(request, sequence_id, step_id, contact_id)
    chosen = next((p for p in contacts.items if p.contact_id == contact_id), None)
    partial = request.headers.get("hx-request") == "true"
    return render(request, "builder/_preview.html" if partial else "builder/preview.html",
                  status_code=status_code, sequence=sequence, step=step, index=index,
                  preview=preview, contacts=contacts, contact_id=contact_id, chosen=chosen,
                  q=q or "", sent_to=sent_to, error=error)


Q = Annotated[str | None, Query(max_length=200)]


@router.get("/sequences/{sequence_id}/steps/{step_id}/preview")
async def preview_step(request: Request, user: SignedIn, sequence_id: uuid.UUID,
                       step_id: uuid.UUID, q: Q = None, contact_id: str | None = None):
    return await _preview_page(request, sequence_id, step_id, _contact(contact_id), q)


def _contact(value: str | None) -> uuid.UUID | None:
    """A chosen contact; none (the sample contact) when blank."""
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ProblemError(Problem(status=404, title="Not found")) from None


@router.post("/sequences/{sequence_id}/steps/{step_id}/test")
async def send_test(request: Request, user: SignedIn, sequence_id: uuid.UUID,
                    step_id: uuid.UUID, contact_id: Annotated[str, Form(max_length=100)] = "",
                    q: Annotated[str, Form(max_length=200)] = ""):
    """Send test to me: to the signed-in user's own address; no enrollment changes. The
    builder's form may post here as a whole (its other fields are not read)."""
    chosen = _contact(contact_id)
    await _preview(request, sequence_id, step_id, chosen)  # the mailer knows the step
    try:
        await ask(request, c.SendTestEmail, sequence_id=sequence_id, step_id=step_id,
                  to=user.email, contact_id=chosen)
    except ProblemError as refused:
        if refused.problem.status != 422:
            raise
        message = N_("Not sent: a variable of this email has no value for this contact and no"
                     " fallback.")
        return await _preview_page(request, sequence_id, step_id, chosen, q, status_code=422,
                                   error=str(texts_for(request).gettext(message)))
    return await _preview_page(request, sequence_id, step_id, chosen, q, sent_to=user.email)
