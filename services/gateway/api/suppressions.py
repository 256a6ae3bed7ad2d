"""The suppression list: the workspace's do-not-contact addresses and whole domains. Checked
when contacts are enrolled (excluded, counted as `excluded_suppressed`) and again when an email
is about to go (held, never sent)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from contracts import commands as c
from contracts.views import SuppressionPage, SuppressionResult
from services.enrollment import suppression_csv
from services.enrollment.contact_import import MAX_IMPORT_BYTES, ImportFileError
from services.gateway.api.deps import KEY_REQUIRED, Cursor, Limit, ask, body_up_to
from services.gateway.bus import problem

router = APIRouter(prefix="/v1/suppressions", tags=["suppressions"], dependencies=KEY_REQUIRED)


@router.get("", response_model=SuppressionPage)
async def list_suppressions(
    request: Request,
    q: Annotated[str | None, Query(max_length=254, description="part of the value")] = None,
    limit: Limit = 50, cursor: Cursor = None,
):
    """The newest first."""
    return await ask(request, c.ListSuppressions, q=q, page=c.Page(limit=limit, cursor=cursor))


@router.post("", status_code=201, response_model=SuppressionResult)
async def add_suppression(body: c.SuppressionEntry, request: Request):
    """Suppress an address (`kim@customer.example`) or a whole domain (`customer.example`).
    Adding one already on the list changes nothing (`already: 1`)."""
    return await ask(request, c.AddSuppressions, entries=[body], reason="manual")


@router.delete("/{value}", status_code=204)
async def remove_suppression(request: Request,
                             value: Annotated[str, Path(min_length=3, max_length=254)]):
    """Take an address or domain off the list (404 when it is not on it)."""
    await ask(request, c.RemoveSuppression, value=value)
    return Response(status_code=204)


@router.post("/import", response_model=SuppressionResult, openapi_extra={
    "requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}})
async def import_suppressions(request: Request):
    """A CSV file (UTF-8, UTF-8 with BOM, or CP949) of addresses and domains, sent as the body
    with `Content-Type: text/csv`: a `value` (or `email`, `domain`, 이메일, 도메인) column and an
    optional `note`, or one value a line without a header. Lines that fail are listed."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "text/csv":
        raise problem(415, "content-type", "send the file as text/csv")
    data = await body_up_to(request, MAX_IMPORT_BYTES)
    try:
        return await suppression_csv.import_file(_asker(request), data)
    except ImportFileError as error:
        raise problem(422, error.field, str(error)) from None


@router.get("/export", response_class=Response, responses={200: {"content": {"text/csv": {}}}})
async def export_suppressions(request: Request):
    """The whole list as CSV: value, kind, reason, note, added_at."""
    return Response(suppression_csv.export(await suppression_csv.every(_asker(request))),
                    media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="suppressions.csv"'})


def _asker(request: Request):
    async def asker(kind, **fields):
        return await ask(request, kind, **fields)
    return asker
