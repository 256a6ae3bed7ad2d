"""Forms in, contract models through: a form posts fields named as the API names them
(`name`, `steps[0].subject`), so the contract models validate a form exactly as they validate an
API body, and each error (ours or a service's) lands next to the field it names, in the
reader's language."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from contracts.base import Problem
from contracts.texts import validation_text
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
        found.setdefault(field_error.field, validation_text(detail).render(gettext))
    return found
