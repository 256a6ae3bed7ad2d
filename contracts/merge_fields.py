"""Merge variables in subjects and bodies: `{{고객명}}`, `{{customer_name}}`, `{{고객명|고객님}}`.

The grammar is part of the contract: the enrollment service refuses unknown variables when a
sequence is saved, and the mailer renders with the same parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Korean names and their English aliases, mapped to the contact field they read.
FIELD_OF_VARIABLE: dict[str, str] = {
    "고객명": "name",
    "customer_name": "name",
    "회사명": "company",
    "company_name": "company",
    "직함": "job_title",
    "job_title": "job_title",
    "담당자명": "owner_name",
    "owner_name": "owner_name",
}

_PLACEHOLDER = re.compile(r"\{\{\s*(?P<name>[^{}|]*?)\s*(?:\|(?P<fallback>[^{}]*))?\}\}")


@dataclass(frozen=True)
class Placeholder:
    variable: str
    fallback: str | None
    start: int  # offset of `{{` in the text
    end: int

    @property
    def field(self) -> str | None:
        return FIELD_OF_VARIABLE.get(self.variable)


def placeholders(text: str) -> list[Placeholder]:
    return [
        Placeholder(m["name"], m["fallback"], m.start(), m.end()) for m in _PLACEHOLDER.finditer(text)
    ]


def unknown_variables(text: str) -> list[Placeholder]:
    return [p for p in placeholders(text) if p.field is None]
