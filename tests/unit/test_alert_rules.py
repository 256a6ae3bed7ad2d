"""The alert rules in deploy/prometheus: they parse (`promtool check rules`), fire on synthetic
series as their tests say (`promtool test rules`), and name only metrics the code registers."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sequences.metrics import METRIC_NAMES

RULES = Path(__file__).parents[2] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None,
                                    reason="Debian's prometheus package (.ci/run installs it)")


@needs_promtool
def test_the_rules_parse():
    done = subprocess.run([PROMTOOL, "check", "rules", "alerts.yml"], cwd=RULES,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 rules found" in done.stdout


@needs_promtool
def test_the_rules_fire_on_synthetic_series():
    done = subprocess.run([PROMTOOL, "test", "rules", "alerts-test.yml"], cwd=RULES,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_rule_names_only_metrics_the_code_registers():
    rules = [rule for group in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"]
             for rule in group["rules"]]
    assert len(rules) == 6 and all(rule["annotations"]["summary"] for rule in rules)
    for rule in rules:
        named = set(re.findall(r"\b(?:sequences|http|messaging)_[a-z_]+", rule["expr"]))
        assert named and named <= METRIC_NAMES, (rule["alert"], named - METRIC_NAMES)
