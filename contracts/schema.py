"""JSON Schema of every event, command and view, for other systems to read."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from contracts import commands, views
from contracts.base import EVENT_TYPES, EventEnvelope


def public_models() -> dict[str, type[BaseModel]]:
    models: dict[str, type[BaseModel]] = {"EventEnvelope": EventEnvelope}
    models.update(EVENT_TYPES)
    for module in (commands, views):
        for name, value in vars(module).items():
            if (isinstance(value, type) and issubclass(value, BaseModel)
                    and value.__module__ == module.__name__
                    and name not in ("Command", "Query")):
                models[name] = value
    return models


def export_asyncapi(path: Path) -> Path:
    from contracts.asyncapi import asyncapi_document

    path.write_text(json.dumps(asyncapi_document(), indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    return path


def export_json_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in sorted(public_models().items()):
        schema = model.model_json_schema()
        version = getattr(model, "schema_version", None)
        if name in EVENT_TYPES:
            schema["x-schema-version"] = version
            schema["x-nats-subject"] = model.nats_subject()
        path = directory / f"{name}.json"
        path.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n")
        written.append(path)
    return written


def webhook_payload_models() -> dict[str, type[BaseModel]]:
    """The body of a delivery of each event type: the envelope (`WebhookPayload`) with that
    type's `type` and `data`."""
    from typing import Literal

    from pydantic import create_model

    from contracts.webhooks import UNDELIVERED_TYPES, WebhookPayload

    return {name: create_model(f"{name}Webhook", __base__=WebhookPayload,
                               __doc__=f"A delivery of `{name}`: {_summary(event)}",
                               type=(Literal[name], ...), data=(event, ...))
            for name, event in sorted(EVENT_TYPES.items()) if name not in UNDELIVERED_TYPES}


def _summary(model: type[BaseModel]) -> str:
    return (model.__doc__ or model.__name__).strip().split("\n\n")[0]


_WEBHOOK_HEADERS = (
    ("webhook-id", "The delivery's id: the same on every retry (drop repeats by it)."),
    ("webhook-timestamp", "Unix seconds of this attempt."),
    ("webhook-signature", "`v1,<base64 HMAC-SHA256 of \"<webhook-id>.<webhook-timestamp>."
                          "<body>\">` keyed by the secret's bytes; several, space-separated,"
                          " during a secret rotation (Standard Webhooks)."),
)


def webhooks_openapi() -> dict:
    """An OpenAPI 3.1 document of the webhooks alone: one entry per event type, its payload
    schema from the contracts (merged into the gateway's `/openapi.json`, and published as
    `docs/webhooks-openapi.json` for generating receivers' types)."""
    from pydantic.json_schema import models_json_schema

    models = webhook_payload_models()
    _, top = models_json_schema([(model, "validation") for model in models.values()],
                                ref_template="#/components/schemas/{model}")
    headers = [{"name": name, "in": "header", "required": True, "description": description,
                "schema": {"type": "string"}} for name, description in _WEBHOOK_HEADERS]
    webhooks = {
        name: {"post": {
            "summary": f"{name} happened",
            "description": _summary(EVENT_TYPES[name]),
            "operationId": f"webhook_{name}",
            "tags": ["webhooks"],
            "parameters": headers,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}},
            "responses": {"2XX": {"description": "Delivered (anything else is retried)."}},
        }}
        for name, model in models.items()
    }
    return {"openapi": "3.1.0",
            "info": {"title": "Sequences webhooks", "version": "1",
                     "description": "What a webhook receives (`POST /v1/webhooks`)."},
            "webhooks": webhooks, "components": {"schemas": top["$defs"]}}


def export_webhooks_openapi(path: Path) -> Path:
    path.write_text(json.dumps(webhooks_openapi(), indent=2, ensure_ascii=False) + "\n")
    return path
