"""The enrollment projector does not read from JetStream the categories it applies at append
(`Subscription.applied_at_append`): that is right only while the enrollment service alone
appends their events, each through `EnrollmentCommands._record`. This keeps it so."""

import ast
from pathlib import Path

from contracts.base import EVENT_TYPES
from services.enrollment.projections import projector

ROOT = Path(__file__).resolve().parents[2]


def _constructed_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            names.add(func.id if isinstance(func, ast.Name) else getattr(func, "attr", ""))
    return names


def test_only_the_enrollment_service_makes_the_events_its_projector_applies_at_append():
    applied = {name for name, event_type in EVENT_TYPES.items()
               if event_type.category in projector.applied_at_append}
    assert applied  # the categories exist
    made_elsewhere = {}
    for folder in ("services", "sequences"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.is_relative_to(ROOT / "services" / "enrollment"):
                continue
            if found := applied & _constructed_names(path):
                made_elsewhere[str(path.relative_to(ROOT))] = sorted(found)
    assert made_elsewhere == {}


def test_the_projector_still_reads_what_other_services_append_and_rebuilds_everything():
    consumed = set(projector.consumed_categories)
    assert {"schedule", "delivery", "task"} <= consumed
    assert set(projector.applied_at_append) <= set(projector.categories)
    assert consumed | set(projector.applied_at_append) == set(projector.categories)
