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
