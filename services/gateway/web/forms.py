"""Forms in, contract models through: a form posts fields named as the API names them
(`name`, `steps[0].subject`), so the contract models validate a form exactly as they validate an
API body, and each error (ours or a service's) lands next to the field it names, in the
reader's language."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from contracts.base import Problem
from sequences.i18n import N_
from sequences.messaging import rpc

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def nested(pairs) -> dict[str, Any]:
    """`[("steps[0].subject", "Hi"), ("name", "X")]` -> `{"steps": [{"subject": "Hi"}],
    "name": "X"}`. Indexes are kept as dict keys while reading, then become lists in index
    order (gaps close up)."""
    root: dict = {}
    for key, value in pairs:
        slots = [name if name else int(index) for name, index in _PART.findall(key)]
        node = root
        for slot in slots[:-1]:
            node = node.setdefault(slot, {})
        if slots:
            node[slots[-1]] = value
    return _lists(root)


def _lists(node):
    """Dicts whose keys are all ints become lists, in index order."""
    if isinstance(node, dict):
        if node and all(isinstance(k, int) for k in node):
            return [_lists(node[k]) for k in sorted(node)]
        return {k: _lists(v) for k, v in node.items()}
    return node


# Pydantic's error types in words of our catalog (the English default is pydantic's message).
_MESSAGES = {
    "missing": N_("This field is required."),
    "string_too_short": N_("Too short: at least %(min_length)s characters."),
    "string_too_long": N_("Too long: at most %(max_length)s characters."),
    "too_short": N_("Add at least %(min_length)s."),
    "too_long": N_("At most %(max_length)s."),
    "greater_than_equal": N_("Must be %(ge)s or more."),
    "less_than_equal": N_("Must be %(le)s or less."),
    "int_parsing": N_("Enter a whole number."),
    "literal_error": N_("Choose one of: %(expected)s."),
    "enum": N_("Choose one of: %(expected)s."),
    "uuid_parsing": N_("Not a valid id."),
    "datetime_from_date_parsing": N_("Enter a date and time."),
}


def errors_of(problem: Problem) -> dict[str, str]:
    """Field -> message (the first for each field); errors naming no field go under `""`."""
    found: dict[str, str] = {}
    for error in problem.errors:
        found.setdefault(error.field or "", error.message)
    if not problem.errors and problem.detail:
        found[""] = problem.detail
    return found


def validation_errors(error: ValidationError, gettext) -> dict[str, str]:
    """A contract model's refusal of a form, field by field, translated where we know the
    error's type."""
    problem = rpc.problem_from_validation(error)
    found: dict[str, str] = {}
    for detail, field_error in zip(error.errors(), problem.errors):
        message = _MESSAGES.get(detail["type"])
        text = field_error.message.removeprefix("Value error, ")
        if message is not None:
            values = {k: str(v) for k, v in (detail.get("ctx") or {}).items()}
            try:
                text = str(gettext(message)) % values
            except (KeyError, ValueError):
                pass
        found.setdefault(field_error.field, text)
    return found
