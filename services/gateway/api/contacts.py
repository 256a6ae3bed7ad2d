"""Contacts: create, search, CSV import, read, change, delete, opt out by hand."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from contracts import commands as c
from contracts.views import ContactPage, ContactView, Created, ImportReport
from services.enrollment import contact_import
from services.gateway.api.deps import KEY_REQUIRED, Cursor, Limit, ask, body_up_to, workspace_of
from services.gateway.bus import answered, problem

router = APIRouter(prefix="/v1/contacts", tags=["contacts"], dependencies=KEY_REQUIRED)


@router.post("", status_code=201, response_model=Created)
async def create_contact(body: c.ContactFields, request: Request):
    return await ask(request, c.CreateContact, **body.model_dump())


@router.get("", response_model=ContactPage)
async def list_contacts(
    request: Request,
    q: Annotated[str | None, Query(max_length=200, description="in name, company or email")] = None,
    status: Annotated[str | None, Query(max_length=50)] = None,
    tag: Annotated[str | None, Query(max_length=100)] = None,
    list_: Annotated[str | None, Query(alias="list", max_length=100)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
):
    return await ask(request, c.ListContacts, q=q, status=status, tag=tag, list=list_,
                     page=c.Page(limit=limit, cursor=cursor))


@router.post("/import", response_model=ImportReport, openapi_extra={
    "requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}})
async def import_contacts(request: Request,
                          map_: Annotated[list[str], Query(alias="map", max_length=20)] = []):
    """Upsert contacts by email from a CSV file (UTF-8, UTF-8 with BOM, or CP949), sent as the
    request body with `Content-Type: text/csv`. Columns named like the fields (or 고객명, 회사명,
    직함, 담당자명, 이메일, ...) are understood; map others with `map=Column:field`. Rows that
    fail are listed with their line and reason; the others are imported. An empty `timezone`
    is filled where the row's `country` (with its `region`, a US state) or phone number decides
    it; those two columns are read for that only."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "text/csv":
        raise problem(415, "content-type", "send the file as text/csv")
    data = await body_up_to(request, contact_import.MAX_IMPORT_BYTES)
    mapping = _column_mapping(map_)
    try:
        parsed = contact_import.parse(data, mapping)
    except contact_import.ImportFileError as error:
        raise problem(422, error.field, str(error)) from None
    return await answered(contact_import.import_contacts(request.app.state.nc,
                                                         workspace_of(request), parsed))


def _column_mapping(items: list[str]) -> dict[str, str]:
    """`map=Column:field` parameters as {column: field}; a column may itself hold a colon."""
    mapping = {}
    for item in items:
        column, _, target = item.rpartition(":")
        if not column:
            raise problem(422, "query.map", f"{item!r}: write it as Column:field")
        mapping[column] = target
    return mapping


@router.get("/{contact_id}", response_model=ContactView)
async def get_contact(contact_id: uuid.UUID, request: Request):
    return await ask(request, c.GetContact, contact_id=contact_id)


@router.patch("/{contact_id}", response_model=ContactView)
async def update_contact(contact_id: uuid.UUID, body: c.ContactChanges, request: Request):
    """Change some fields; the others stay (absent or null: unchanged). The one exception is
    `timezone`: null, like "", clears the contact's own zone (sequences sending in the contact's
    zone fall back to the sequence's, and pending steps are re-planned)."""
    if "timezone" in body.model_fields_set and body.timezone is None:
        body = body.model_copy(update={"timezone": ""})  # the service reads "" as "clear it"
    await ask(request, c.UpdateContact, contact_id=contact_id, changes=body)
    return await ask(request, c.GetContact, contact_id=contact_id)


@router.delete("/{contact_id}", status_code=204)
async def delete_contact(contact_id: uuid.UUID, request: Request):
    """Delete (softly: the history stays in the log); active enrollments stop."""
    await ask(request, c.DeleteContact, contact_id=contact_id)
    return Response(status_code=204)


@router.post("/{contact_id}/opt-out", response_model=ContactView)
async def opt_out(contact_id: uuid.UUID, request: Request, body: c.StopRequest | None = None):
    """Opt the contact out by hand: every active enrollment stops, and no email reaches them
    again."""
    reason = body.reason if body else None
    await ask(request, c.OptOutContact, contact_id=contact_id, source="manual", reason=reason)
    return await ask(request, c.GetContact, contact_id=contact_id)
