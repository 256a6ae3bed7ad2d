"""Every benchmark module imports (`make bench` is not run by CI; this keeps it from rotting)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize("module", sorted(
    ".".join(p.relative_to(BENCH).with_suffix("").parts) for p in BENCH.rglob("*.py")))
def test_the_benchmark_module_imports(module):
    importlib.import_module(f"bench.{module}")
