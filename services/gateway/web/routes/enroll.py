"""Enroll: "Add contacts · Pick contacts" (search, check several, enroll them one by one, and
see what became of each) and Segment (by status, tag, list or everyone: first how many would be
enrolled, skipped as already active and excluded as opted out, then the enrollment and its
counts)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import Form, Query, Request
from pydantic import ValidationError

from contracts import commands as c
from contracts.views import (
    ENROLLMENT_REFUSALS,
    BulkEnrollmentResult,
    ContactPage,
    ContactView,
)
from services.gateway.bus import ProblemError
from services.gateway.web import forms
from services.gateway.web.pages import ask, page_router
from services.gateway.web.routes.sequence_detail import sequence_of
from services.gateway.web.session import SignedIn
from services.gateway.web.templating import render, texts_for

router = page_router()
PAGE_SIZE = 50
MOST_PICKED = 200
Text = Annotated[str | None, Query(max_length=200)]
# the refusal of one contact, by the text the service answers with
_REFUSED_AS = {text: kind for kind, text in ENROLLMENT_REFUSALS.items()}


@router.get("/sequences/{sequence_id}/enroll")
async def enroll_page(request: Request, user: SignedIn, sequence_id: uuid.UUID,
                      tab: Literal["pick", "segment"] = "pick", q: Text = None,
                      cursor: Annotated[str | None, Query(max_length=500)] = None,
                      status: Text = None, tag: Text = None, list: Text = None,
                      all: bool = False, reenroll: bool = False, preview: bool = False):
    """The pick tab searches contacts; the segment tab, asked to `preview`, shows the counts
    the enrollment would give, and the button that does it."""
    sequence = await sequence_of(request, sequence_id)
    context: dict = {"sequence": sequence, "tab": tab, "errors": {}}
    if tab == "pick":
        context.update(q=q or "", cursor=cursor, contacts=ContactPage.model_validate(await ask(
            request, c.ListContacts, q=q or None, page=c.Page(limit=PAGE_SIZE, cursor=cursor))))
    else:
        fields = {"status": status, "tag": tag, "list": list, "all": all, "reenroll": reenroll}
        context["fields"] = fields
        if preview and sequence.state == "live":
            segment, context["errors"] = _segment(request, fields)
            if segment is not None:
                context.update(segment=segment, reenroll=reenroll,
                               preview=BulkEnrollmentResult.model_validate(await ask(
                                   request, c.PreviewSegment, sequence_id=sequence_id,
                                   segment=segment, reenroll=reenroll)))
    return render(request, "enroll/page.html", status_code=422 if context["errors"] else 200,
                  **context)


def _segment(request: Request, fields: dict) -> tuple[c.Segment | None, dict[str, str]]:
    """The segment, validated by the contract model as the API validates it (an empty text
    field means "not by this")."""
    given = {k: v.strip() for k in ("status", "tag", "list") if (v := fields[k]) and v.strip()}
    try:
        return c.Segment(**given, all=fields["all"]), {}
    except ValidationError as error:
        texts = texts_for(request)
        # errors of a field, or of the whole segment (named "body", as for an API body)
        errors = {"segment" if k in ("", "body") else f"segment.{k}": v
                  for k, v in forms.validation_errors(error, texts.gettext).items()}
        if "segment" in errors:  # the model's own rule: who, or everyone, not both
            errors["segment"] = texts.gettext(
                "Give a status, a tag or a list, or choose everyone (not both).")
        return None, errors


@router.post("/sequences/{sequence_id}/enroll/segment")
async def enroll_segment(request: Request, user: SignedIn, sequence_id: uuid.UUID):
    """Enroll the segment (the fields as the API names them: `segment.tag`, ...); with htmx
    only the result replaces the segment panel."""
    sequence = await sequence_of(request, sequence_id)
    body = forms.nested((await request.form()).multi_items())
    segment = body.get("segment") if isinstance(body.get("segment"), dict) else {}
    fields = {"status": segment.get("status"), "tag": segment.get("tag"),
              "list": segment.get("list"), "all": segment.get("all") in ("true", "on", "1"),
              "reenroll": body.get("reenroll") in ("true", "on", "1")}
    chosen, errors = _segment(request, fields)
    if chosen is None:
        return render(request, "enroll/page.html", status_code=422, sequence=sequence,
                      tab="segment", fields=fields, errors=errors)
    result = BulkEnrollmentResult.model_validate(await ask(
        request, c.EnrollSegment, sequence_id=sequence_id, segment=chosen,
        reenroll=fields["reenroll"]))
    template = "enroll/_segment_result.html" if request.headers.get(
        "hx-request") == "true" else "enroll/segment_done.html"
    return render(request, template, sequence=sequence, result=result, segment=chosen)


@router.post("/sequences/{sequence_id}/enroll/contacts")
async def enroll_contacts(request: Request, user: SignedIn, sequence_id: uuid.UUID,
                          contact_id: Annotated[list[uuid.UUID],
                                                Form(max_length=MOST_PICKED)] = [],
                          reenroll: Annotated[bool, Form()] = False):
    """Each picked contact in turn; the answer says, per contact, enrolled or why not."""
    sequence = await sequence_of(request, sequence_id)
    outcomes = []
    for picked in dict.fromkeys(contact_id):
        try:
            contact = ContactView.model_validate(
                await ask(request, c.GetContact, contact_id=picked))
        except ProblemError as error:
            if error.problem.status != 404:
                raise
            continue  # deleted meanwhile (or never this workspace's): nothing to say about it
        try:
            await ask(request, c.EnrollContact, sequence_id=sequence_id, contact_id=picked,
                      reenroll=reenroll)
        except ProblemError as error:
            if error.problem.status != 409:
                raise
            outcomes.append((contact, _REFUSED_AS.get(error.problem.detail, "refused"),
                             error.problem.detail))
        else:
            outcomes.append((contact, "enrolled", None))
    return render(request, "enroll/picked.html", sequence=sequence, outcomes=outcomes)
