"""The command line with a missing or wrong setting: one line and exit status 2, never a
traceback; with a running dev stack's servers file, the unset settings come from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sequences.devstack import servers


def sequences(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sequences.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", [["projections", "rebuild"],
                                     ["admin", "create-workspace", "Acme", "--email", "a@b.co"],
                                     ["status"]])
def test_a_missing_setting_is_one_line_and_exit_2(command, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NATS_URL")}
    env["SEQUENCES_DATA_DIR"] = str(tmp_path)  # no dev stack there
    done = sequences(*command, env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "sequences: DATABASE_URL is not set (see the README, 'Configuration')"]


def test_a_wrong_database_url_is_one_line_and_exit_2(tmp_path):
    env = {**os.environ, "DATABASE_URL": "not a url", "NATS_URL": "nats://127.0.0.1:1"}
    done = sequences("projections", "rebuild", env=env)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("sequences: cannot use DATABASE_URL")


def test_unset_settings_come_from_a_running_dev_stack(tmp_path, monkeypatch):
    (tmp_path / servers.SERVERS_FILE).write_text(json.dumps({
        "DATABASE_URL": "postgresql://dev", "NATS_URL": "nats://dev", "pid": os.getpid()}))
    monkeypatch.setenv("SEQUENCES_DATA_DIR", str(tmp_path))
    environ = {"NATS_URL": "nats://mine"}
    said = servers.use_running_stack(environ)
    assert environ == {"NATS_URL": "nats://mine", "DATABASE_URL": "postgresql://dev"}
    assert said and "DATABASE_URL" in said and str(tmp_path) in said


def test_a_stopped_dev_stack_is_not_used(tmp_path, monkeypatch):
    (tmp_path / servers.SERVERS_FILE).write_text(json.dumps({
        "DATABASE_URL": "postgresql://dev", "NATS_URL": "nats://dev", "pid": 2**22 + 12345}))
    monkeypatch.setenv("SEQUENCES_DATA_DIR", str(tmp_path))
    environ: dict[str, str] = {}
    assert servers.use_running_stack(environ) is None and environ == {}


def test_status_text_shows_every_figure_and_a_dash_for_what_could_not_be_read():
    from datetime import datetime, timezone

    from sequences.cli import _status_text
    from sequences.operations import ConsumerLag, Figures, HandlerError

    at = datetime(2026, 12, 2, 6, 0, tzinfo=timezone.utc)
    text = _status_text(Figures(
        at=at, consumers=[ConsumerLag("mailer", 3, 42.0)], outbox_depth=0,
        outbox_oldest_age=0.0, sent_last_minute=7, mailboxes_healthy=1,
        mailboxes_unhealthy=[("a@x.example", "SMTP: 535")],
        errors=[HandlerError(at, "mailer", "StepDue", "enrollment-1", "ValueError: x",
                             "ab" * 16)]))
    assert "mailer                              3  42 s" in text
    assert "due steps       - pending, - late" in text
    assert "sent            7 in the last minute" in text
    assert "failing       a@x.example: SMTP: 535" in text
    assert f"trace {'ab' * 16}: ValueError: x" in text
