"""Sequences: save, list, change steps, pause/resume/archive, the schedule, and a step's
preview and "send test to me"."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from pydantic import BaseModel

from contracts import commands as c
from contracts.views import Created, SchedulePreview, SequencePage, SequenceView, StepPreview
from services.gateway.api.deps import KEY_REQUIRED, Caller, Cursor, Limit, ask

router = APIRouter(prefix="/v1/sequences", tags=["sequences"], dependencies=KEY_REQUIRED)


@router.post("", status_code=201, response_model=Created)
async def create_sequence(body: c.SequenceDefinition, request: Request):
    """Save a sequence; it is live at once."""
    return await ask(request, c.CreateSequence, **body.model_dump())


@router.get("", response_model=SequencePage)
async def list_sequences(request: Request, limit: Limit = 50, cursor: Cursor = None):
    """Every sequence with its headline ("N enrolled · live")."""
    return await ask(request, c.ListSequences, page=c.Page(limit=limit, cursor=cursor))


@router.get("/{sequence_id}", response_model=SequenceView)
async def get_sequence(sequence_id: uuid.UUID, request: Request):
    """The sequence, its counts per status and its headline."""
    return await ask(request, c.GetSequence, sequence_id=sequence_id)


@router.patch("/{sequence_id}", response_model=SequenceView)
async def change_settings(sequence_id: uuid.UUID, body: c.SequenceSettingsChanges,
                          request: Request):
    """Change settings (every field of the definition but `steps`; those left out stay). A new
    send window, holiday calendar, zone or zone mode re-plans enrollees' pending steps by the
    new rules: nothing sent is touched, and nothing fires at once because of the change."""
    await ask(request, c.ChangeSequenceSettings, sequence_id=sequence_id, changes=body)
    return await ask(request, c.GetSequence, sequence_id=sequence_id)


@router.put("/{sequence_id}/steps", response_model=SequenceView)
async def change_steps(sequence_id: uuid.UUID, body: c.StepsRequest, request: Request):
    """Replace the steps. Keep a step by sending its `step_id`; what enrollees already ran is
    never rewritten, and their pending steps are re-planned."""
    await ask(request, c.ChangeSequenceSteps, sequence_id=sequence_id, steps=body.steps)
    return await ask(request, c.GetSequence, sequence_id=sequence_id)


def _sequence_action(action: str, command: type[BaseModel], summary: str) -> None:
    """The three state changes are one shape: send the command, answer the sequence."""
    async def act(sequence_id: uuid.UUID, request: Request):
        await ask(request, command, sequence_id=sequence_id)
        return await ask(request, c.GetSequence, sequence_id=sequence_id)

    act.__doc__ = summary
    router.post(f"/{{sequence_id}}/{action}", response_model=SequenceView,
                name=f"{action}_sequence")(act)


_sequence_action("pause", c.PauseSequence,
                 "Pause: every enrollee's pending step is held until resumed.")
_sequence_action("resume", c.ResumeSequence,
                 "Resume: held steps go on; missed ones are re-planned from now by the same rules.")
_sequence_action("archive", c.ArchiveSequence,
                 "Archive: no new enrollments, nothing more goes out.")


@router.get("/{sequence_id}/schedule", response_model=SchedulePreview)
async def preview_schedule(sequence_id: uuid.UUID, request: Request,
                           start: c.ScheduleStart | None = None,
                           contact_id: uuid.UUID | None = None):
    """When each step would go out for someone enrolled at `start` (default now), in the zone
    it is sent in (the contact's, given `contact_id` and zone mode "contact"; else the
    sequence's) and in UTC, with why each moved past its due moment (`moved`: not a sending
    day, a holiday, a skip date, after the window). `start` must be from 2000-01-01 up to
    2200-01-01 (422 otherwise); without an offset it is read in that zone."""
    return await ask(request, c.PreviewSchedule, sequence_id=sequence_id, start=start,
                     contact_id=contact_id)


@router.post("/{sequence_id}/steps/{step_id}/preview", response_model=StepPreview)
async def preview_step(sequence_id: uuid.UUID, step_id: uuid.UUID, request: Request,
                       body: c.PreviewRequest | None = None):
    """Render a step for a chosen contact (or a sample one) without sending. Variables that
    would be empty are listed in `missing`: for those contacts the step would be held."""
    contact_id = body.contact_id if body else None
    return await ask(request, c.PreviewStep, sequence_id=sequence_id, step_id=step_id,
                     contact_id=contact_id)


@router.post("/{sequence_id}/steps/{step_id}/test", status_code=202, response_model=Created)
async def send_test(sequence_id: uuid.UUID, step_id: uuid.UUID, request: Request,
                    me: Caller, body: c.TestEmailRequest | None = None):
    """Send test to me: the email step, rendered, to your own address (the API key's user);
    no enrollment changes."""
    contact_id = body.contact_id if body else None
    return await ask(request, c.SendTestEmail, sequence_id=sequence_id, step_id=step_id,
                     to=me.user_email, contact_id=contact_id)
