"""Contacts: the list (search and filters, live as you type), the contact card (fields, every
enrollment in every sequence, enroll, opt out, edit, delete), a new contact, and CSV import
(upload, the column mapping it found, progress while it runs, the per-row report)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Form, Query, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from contracts import commands as c
from contracts.base import Problem
from contracts.texts import NOT_AN_EMAIL
from contracts.views import ContactEnrollmentPage, ContactPage, ContactView, SequencePage
from sequences import i18n
from sequences.i18n import N_
from services.enrollment import contact_import
from services.gateway.bus import ProblemError
from services.gateway.web import forms, imports
from services.gateway.web.pages import ask, now, page_router
from services.gateway.web.routes.settings import ZONES
from services.gateway.web.routes.suppressions import SUPPRESSION_REASONS
from services.gateway.web.session import SignedIn
from services.gateway.web.templating import language_of, render

router = page_router()
PAGE_SIZE = 50
ENROLLMENTS_SHOWN = 100
Filter = Annotated[str | None, Query(max_length=200)]
Cursor = Annotated[str | None, Query(max_length=500)]

# the fields of a contact, in the order the forms show them (named as the API names them)
FIELDS = ("name", "email", "company", "job_title", "owner_name", "phone", "status", "tags",
          "lists", "timezone")
LIST_FIELDS = ("tags", "lists")
FIELD_LABELS = {"name": N_("Name"), "email": N_("Email"), "company": N_("Company"),
                "job_title": N_("Job title"), "owner_name": N_("Owner"), "phone": N_("Phone"),
                "status": N_("Status"), "tags": N_("Tags"), "lists": N_("Lists"),
                "timezone": N_("Timezone"),
                # import columns read only to infer the timezone
                "country": N_("Country (for the timezone)"),
                "region": N_("State or region (for the timezone)")}
# what `?done=` says after a change (a fixed set: nothing typed in a URL is shown)
NOTICES = {"created": N_("Contact added."), "updated": N_("Changes saved."),
           "enrolled": N_("Enrolled. The new enrollment is at the top of the list below."),
           "opted_out": N_("Opted out: every active enrollment stopped, and no email will"
                           " reach this contact again."),
           "deleted": N_("Contact deleted. Their active enrollments stopped.")}
# service refusals a person may meet here, in words of the catalog
_EMAIL_TAKEN = N_("Another contact already has this email.")
_NOT_AN_EMAIL = NOT_AN_EMAIL
_TOO_BIG = N_("The file is over %(mb)s MB. Split it into smaller files.")
_NO_FILE = N_("Choose a CSV file to import.")
_TWICE = N_("%(field)s is already chosen for column %(column)s.")
# the service's words meant for API callers, as the card says them
_ENDED = ("the contact's earlier enrollment in this sequence ended; send reenroll: true to"
          " enroll again")
_ENDED_HERE = N_("An earlier enrollment in this sequence ended: tick “Enroll again” to enroll"
                 " once more.")
_UNKNOWN_ZONE = N_("Unknown timezone: choose one from the list, e.g. Asia/Seoul.")
_GONE = N_("The uploaded file is no longer kept (after an hour). Upload it again.")


def _say(request: Request, message: str, **values) -> str:
    return i18n.translate(language_of(request), message, **values)


def _notice(request: Request, done: str | None) -> str | None:
    return _say(request, NOTICES[done]) if done in NOTICES else None


# --- the list ---------------------------------------------------------------------------------


@router.get("/contacts")
async def contact_list(request: Request, user: SignedIn, q: Filter = None,
                       status: Filter = None, tag: Filter = None,
                       list: Annotated[str | None, Query(max_length=100)] = None,
                       cursor: Cursor = None, rows: bool = False, done: str | None = None):
    """Search (name, company, email) and filters; `rows=1` (htmx: live search, "Show more")
    answers only the table's rows."""
    filters = {k: v.strip() for k, v in (("q", q), ("status", status), ("tag", tag),
                                          ("list", list)) if v and v.strip()}
    try:
        page = ContactPage.model_validate(await ask(
            request, c.ListContacts, **filters, page=c.Page(limit=PAGE_SIZE, cursor=cursor)))
    except ValidationError:  # a filter the query refuses (a line break, ...): nothing matches
        page = ContactPage(items=[], next_cursor=None)
    return render(request, "contacts/_rows.html" if rows else "contacts/list.html",
                  page=page, filters=filters, cursor=cursor, notice=_notice(request, done),
                  now=await now(request))


# --- CSV import (before the card's routes: `/contacts/import` is not a contact id) -------------


def _file_error(request: Request, error: contact_import.ImportFileError) -> str:
    said = _say(request, error.message, **error.values)
    return said[:1].upper() + said[1:]


def _upload_page(request: Request, status_code: int = 200, error: str | None = None):
    return render(request, "contacts/import.html", status_code=status_code,
                  errors={"file": error} if error else {},
                  max_mb=contact_import.MAX_IMPORT_BYTES // 2**20)


@router.get("/contacts/import")
async def import_page(request: Request, user: SignedIn):
    return _upload_page(request)


@router.post("/contacts/import")
async def upload(request: Request, user: SignedIn):
    """Step 1: the file is checked as a whole (size, encoding, not binary, a header) and kept
    for the next step; nothing is imported yet."""
    file = (await request.form()).get("file")
    if not isinstance(file, UploadFile) or not file.filename:
        return _upload_page(request, 422, _say(request, _NO_FILE))
    if (file.size or 0) > contact_import.MAX_IMPORT_BYTES:
        return _upload_page(request, 413, _say(
            request, _TOO_BIG, mb=contact_import.MAX_IMPORT_BYTES // 2**20))
    data = await file.read()
    try:
        header = imports.header_of(contact_import.decode(data))
    except contact_import.ImportFileError as error:
        return _upload_page(request, 422, _file_error(request, error))
    record = await imports.keep_upload(request.app.state.nc, user.workspace_id, file.filename,
                                       data, header)
    return RedirectResponse(f"/contacts/import/{record.import_id}/mapping", status_code=303)


async def _record(request: Request, import_id: str) -> imports.ImportRecord:
    record = await imports.record_of(request.app.state.nc, request.state.user.workspace_id,
                                     import_id)
    if record is None:
        raise ProblemError(Problem(status=404, title="Not found"))
    return record


def _mapping_page(request: Request, record: imports.ImportRecord, mapping: dict[str, str],
                  errors: dict[str, str], status_code: int = 200):
    return render(request, "contacts/mapping.html", status_code=status_code, record=record,
                  mapping=mapping, errors=errors, labels=FIELD_LABELS,
                  fields=contact_import.TARGETS)


@router.get("/contacts/import/{import_id}/mapping")
async def mapping_page(request: Request, user: SignedIn, import_id: str):
    """Step 2: which column goes to which field, as found; the user may change any."""
    record = await _record(request, import_id)
    return _mapping_page(request, record, record.mapping, {})


@router.post("/contacts/import/{import_id}")
async def run_import(request: Request, user: SignedIn, import_id: str):
    """Step 3: import with the mapping (posted as the API takes it: `map=Column:field`, one
    per column; an empty field: not imported), in the background; then its progress."""
    record = await _record(request, import_id)
    mapping: dict[str, str] = {}
    for item in (await request.form()).getlist("map"):
        column, _, target = str(item).rpartition(":")
        if column in record.header:
            mapping[column] = target
    errors = {}
    chosen: dict[str, str] = {}
    for index, column in enumerate(record.header):
        target = mapping.get(column, "")
        if target and target in chosen:
            errors[f"map-{index}"] = _say(request, _TWICE, column=chosen[target],
                                          field=_say(request, FIELD_LABELS.get(target, target)))
        chosen.setdefault(target, column)
    data = None if errors else await imports.file_of(request.app.state.nc, record)
    if not errors and data is None:
        errors[""] = _say(request, _GONE)
    if not errors:
        try:
            parsed = contact_import.parse(data, mapping)
        except contact_import.ImportFileError as error:
            errors[""] = _file_error(request, error)
    if errors:
        return _mapping_page(request, record, {**record.mapping, **mapping}, errors, 422)
    await imports.start(request.app.state.nc, user.workspace_id, record, parsed, mapping)
    return RedirectResponse(f"/contacts/import/{import_id}", status_code=303)


@router.get("/contacts/import/{import_id}")
async def import_progress(request: Request, user: SignedIn, import_id: str,
                          progress: bool = False):
    """Progress while it runs (htmx polls `progress=1` every second), then the report."""
    record = await _record(request, import_id)
    if record.state == "uploaded":
        return RedirectResponse(f"/contacts/import/{import_id}/mapping", status_code=303)
    sequences = await _live_sequences(request) if record.state == "done" else []
    return render(request, "contacts/_progress.html" if progress else "contacts/progress.html",
                  record=record, labels=FIELD_LABELS, sequences=sequences)


# --- a contact's fields: one form for new and edit ---------------------------------------------


def _typed(form) -> dict[str, str]:
    return {name: str(form.get(name, "")) for name in FIELDS}


def _body(typed: dict[str, str], new: bool) -> dict:
    """The form as the API's body: tags and lists are comma-separated in the form; an empty
    timezone is none for a new contact, and clears it for one being edited."""
    body = {}
    for name, value in typed.items():
        if name == "timezone" and new and not value.strip():
            continue
        if name in LIST_FIELDS:
            body[name] = [v.strip() for v in value.split(",") if v.strip()]
        else:
            body[name] = value.strip()
    return body


def _field_errors(request: Request, error: ValidationError) -> dict[str, str]:
    gettext = lambda message: _say(request, message)  # noqa: E731
    found = {}
    for name, message in forms.validation_errors(error, gettext).items():
        found.setdefault(name.split("[")[0].split(".")[0], message)
    for detail in error.errors():
        if detail["loc"] and detail["loc"][0] == "email" and detail["type"] == "value_error":
            found["email"] = _say(request, _NOT_AN_EMAIL)
        if detail["loc"] and detail["loc"][0] == "timezone":
            found["timezone"] = _say(request, _UNKNOWN_ZONE)
    return found


def _problem_errors(request: Request, problem: Problem) -> dict[str, str]:
    """A service's refusal, next to the field it names, in the reader's language where the
    catalog has its words (else as the service said it)."""
    found = {}
    for name, message in forms.errors_of(problem).items():
        if name == "email" and problem.status == 409:
            message = _EMAIL_TAKEN
        found[name if name in FIELDS else ""] = _say(request, message)
    return found


def _validated(request: Request, model: type[BaseModel], typed: dict[str, str]):
    try:
        return model.model_validate(_body(typed, new=model is c.ContactFields)), {}
    except ValidationError as error:
        return None, _field_errors(request, error)


@router.get("/contacts/new")
async def new_contact(request: Request, user: SignedIn):
    return render(request, "contacts/form.html", contact=None, typed={}, errors={},
                  labels=FIELD_LABELS, zones=ZONES)


@router.post("/contacts")
async def create_contact(request: Request, user: SignedIn):
    typed = _typed(await request.form())
    fields, errors = _validated(request, c.ContactFields, typed)
    if fields is not None:
        try:
            created = await ask(request, c.CreateContact, **fields.model_dump())
            return RedirectResponse(f"/contacts/{created['id']}?done=created", status_code=303)
        except ProblemError as refused:
            if refused.problem.status >= 500:
                raise
            errors = _problem_errors(request, refused.problem)
    return render(request, "contacts/form.html", status_code=422, contact=None, typed=typed,
                  errors=errors, labels=FIELD_LABELS, zones=ZONES)


async def _contact(request: Request, contact_id: uuid.UUID) -> ContactView:
    return ContactView.model_validate(await ask(request, c.GetContact, contact_id=contact_id))


def _as_typed(contact: ContactView) -> dict[str, str]:
    return {name: ", ".join(getattr(contact, name)) if name in LIST_FIELDS
            else getattr(contact, name) or "" for name in FIELDS}


@router.get("/contacts/{contact_id}/edit")
async def edit_contact(request: Request, user: SignedIn, contact_id: uuid.UUID):
    contact = await _contact(request, contact_id)
    return render(request, "contacts/form.html", contact=contact, typed=_as_typed(contact),
                  errors={}, labels=FIELD_LABELS, zones=ZONES)


@router.post("/contacts/{contact_id}/edit")
async def update_contact(request: Request, user: SignedIn, contact_id: uuid.UUID):
    """Every field of the form in one `UpdateContact`: all of it is saved, or (a field
    refused) none of it."""
    contact = await _contact(request, contact_id)
    typed = _typed(await request.form())
    changes, errors = _validated(request, c.ContactChanges, typed)
    if changes is not None:
        try:
            await ask(request, c.UpdateContact, contact_id=contact_id, changes=changes)
            return RedirectResponse(f"/contacts/{contact_id}?done=updated", status_code=303)
        except ProblemError as refused:
            if refused.problem.status in (404, 503):
                raise
            errors = _problem_errors(request, refused.problem)
    return render(request, "contacts/form.html", status_code=422, contact=contact, typed=typed,
                  errors=errors, labels=FIELD_LABELS, zones=ZONES)


# --- the card ---------------------------------------------------------------------------------


async def _live_sequences(request: Request) -> list:
    page = SequencePage.model_validate(await ask(request, c.ListSequences,
                                                 page=c.Page(limit=500)))
    return [s for s in page.items if s.state == "live"]


async def _card(request: Request, contact_id: uuid.UUID, enrollments_after: str | None = None,
                status_code: int = 200, **context):
    contact = await _contact(request, contact_id)
    enrollments = ContactEnrollmentPage.model_validate(await ask(
        request, c.ListContactEnrollments, contact_id=contact_id,
        page=c.Page(limit=ENROLLMENTS_SHOWN, cursor=enrollments_after)))
    context.setdefault("errors", {})
    return render(request, "contacts/card.html", status_code=status_code, contact=contact,
                  enrollments=enrollments, sequences=await _live_sequences(request),
                  labels=FIELD_LABELS, enrollments_after=enrollments_after,
                  suppression_reasons=SUPPRESSION_REASONS,
                  now=await now(request), **context)


@router.get("/contacts/{contact_id}")
async def contact_card(request: Request, user: SignedIn, contact_id: uuid.UUID,
                       enrollments_after: Cursor = None, done: str | None = None):
    return await _card(request, contact_id, enrollments_after, notice=_notice(request, done))


@router.post("/contacts/{contact_id}/enroll")
async def enroll(request: Request, user: SignedIn, contact_id: uuid.UUID,
                 sequence_id: Annotated[str, Form(max_length=100)] = "",
                 reenroll: Annotated[bool, Form()] = False):
    """Enroll into a live sequence; a refusal (already active, opted out, ...) is said next to
    the sequence picker."""
    try:
        chosen = uuid.UUID(sequence_id)
    except ValueError:
        return await _card(request, contact_id, status_code=422,
                           errors={"sequence_id": _say(request, N_("Choose a sequence."))})
    try:
        await ask(request, c.EnrollContact, sequence_id=chosen, contact_id=contact_id,
                  reenroll=reenroll)
    except ProblemError as refused:
        problem = refused.problem
        if problem.status >= 500 or (problem.status == 404 and "sequence_id" not in
                                     forms.errors_of(problem)):
            raise
        said = next(iter(forms.errors_of(problem).values()), problem.detail or "")
        said = _ENDED_HERE if said == _ENDED else said
        return await _card(request, contact_id, status_code=problem.status,
                           errors={"sequence_id": _say(request, said)}, chosen=str(chosen))
    return RedirectResponse(f"/contacts/{contact_id}?done=enrolled", status_code=303)


@router.get("/contacts/{contact_id}/opt-out")
async def confirm_opt_out(request: Request, user: SignedIn, contact_id: uuid.UUID):
    """Asked first, on a page of its own (no script needed)."""
    return render(request, "contacts/confirm.html", action="opt-out",
                  contact=await _contact(request, contact_id))


@router.get("/contacts/{contact_id}/delete")
async def confirm_delete(request: Request, user: SignedIn, contact_id: uuid.UUID):
    return render(request, "contacts/confirm.html", action="delete",
                  contact=await _contact(request, contact_id))


@router.post("/contacts/{contact_id}/opt-out")
async def opt_out(request: Request, user: SignedIn, contact_id: uuid.UUID):
    await ask(request, c.OptOutContact, contact_id=contact_id, source="manual")
    return RedirectResponse(f"/contacts/{contact_id}?done=opted_out", status_code=303)


@router.post("/contacts/{contact_id}/delete")
async def delete(request: Request, user: SignedIn, contact_id: uuid.UUID):
    await ask(request, c.DeleteContact, contact_id=contact_id)
    return RedirectResponse("/contacts?done=deleted", status_code=303)
