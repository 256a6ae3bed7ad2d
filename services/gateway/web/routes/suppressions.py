"""Settings › Suppression list: the workspace's do-not-contact addresses and whole domains.
Listed newest first (search, "Show more"), added one at a time or from a CSV file, removed
after a confirmation, exported as CSV (the same file `GET /v1/suppressions/export` gives)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from contracts import commands as c
from contracts.views import SuppressionPage, SuppressionResult
from sequences import i18n
from sequences.i18n import N_
from services.enrollment import contact_import, suppression_csv
from services.gateway.bus import ProblemError
from services.gateway.web.pages import ask, page_router
from services.gateway.web.session import SignedIn
from services.gateway.web.templating import language_of, render

router = page_router()
Text = Annotated[str, Form(max_length=5000)]
Cursor = Annotated[str | None, Query(max_length=500)]

_NOT_A_VALUE = N_("Enter an email address (kim@customer.example) or a domain (customer.example).")
_NO_FILE = N_("Choose a CSV file to upload.")
_NOT_ON_LIST = N_("%(value)s is not on the suppression list.")
SUPPRESSION_REASONS = {"bounced": N_("bounced"), "manual": N_("added by hand"),
                       "import": N_("imported")}


def _say(request: Request, message: str, **values) -> str:
    return i18n.translate(language_of(request), message, **values)


async def _page(request: Request, status_code: int = 200, q: str | None = None,
                cursor: str | None = None, **context):
    page = SuppressionPage.model_validate(await ask(
        request, c.ListSuppressions, q=q or None, page=c.Page(limit=50, cursor=cursor)))
    context.setdefault("values", {})
    context.setdefault("errors", {})
    return render(request, "settings/suppressions.html", status_code=status_code,
                  section="suppressions", page=page, q=q or "", cursor=cursor,
                  reasons=SUPPRESSION_REASONS, **context)


@router.get("/settings/suppressions")
async def suppressions(request: Request, user: SignedIn,
                       q: Annotated[str | None, Query(max_length=254)] = None,
                       cursor: Cursor = None, added: int | None = None):
    return await _page(request, q=q, cursor=cursor, added=added)


@router.post("/settings/suppressions")
async def add(request: Request, user: SignedIn, value: Text = "", note: Text = ""):
    typed = {"value": value.strip(), "note": note.strip()}
    try:
        entry = c.SuppressionEntry(**typed)
    except ValidationError as error:
        field = str(error.errors()[0]["loc"][0])
        message = _say(request, _NOT_A_VALUE) if field == "value" else error.errors()[0]["msg"]
        return await _page(request, 422, values=typed, errors={field: message})
    result = SuppressionResult.model_validate(
        await ask(request, c.AddSuppressions, entries=[entry], reason="manual"))
    return RedirectResponse(f"/settings/suppressions?added={result.added}", status_code=303)


@router.post("/settings/suppressions/import")
async def upload(request: Request, user: SignedIn):
    """A CSV file of addresses and domains, added at once; the lines that failed are listed."""
    file = (await request.form()).get("file")
    if not isinstance(file, UploadFile) or not file.filename:
        return await _page(request, 422, upload_errors={"file": _say(request, _NO_FILE)})
    data = await file.read(contact_import.MAX_IMPORT_BYTES + 1)

    async def asker(kind, **fields):
        return await ask(request, kind, **fields)
    try:
        result = await suppression_csv.import_file(asker, data)
    except contact_import.ImportFileError as error:
        return await _page(request, 422, upload_errors={
            "file": _say(request, error.message, **error.values)})
    return await _page(request, imported=result)


@router.get("/settings/suppressions/export")
async def export(request: Request, user: SignedIn):
    async def asker(kind, **fields):
        return await ask(request, kind, **fields)
    return Response(suppression_csv.export(await suppression_csv.every(asker)),
                    media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="suppressions.csv"'})


@router.get("/settings/suppressions/remove")
async def confirm_remove(request: Request, user: SignedIn,
                         value: Annotated[str, Query(max_length=254)]):
    return render(request, "settings/confirm_unsuppress.html", section="suppressions",
                  value=value)


@router.post("/settings/suppressions/remove")
async def remove(request: Request, user: SignedIn,
                 value: Annotated[str, Query(max_length=254)]):
    try:
        await ask(request, c.RemoveSuppression, value=value)
    except (ProblemError, ValidationError) as refused:
        if isinstance(refused, ProblemError) and refused.problem.status != 404:
            raise
        return await _page(request, 404, errors={"": _say(request, _NOT_ON_LIST, value=value)})
    return RedirectResponse("/settings/suppressions", status_code=303)
