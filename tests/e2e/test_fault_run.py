"""The fault run (bench/fault_run.py), small: no email lost or doubled, every status right, every
consumer level with the log and a rebuild equal to the live read models, while every service is
SIGKILLed once (a mailer replica among two), nats-server and PostgreSQL restarted, and nats-server
killed once more as a crash of the machine would (its unsynced tail lost)."""

from __future__ import annotations

import os

import pytest

from bench.fault_run import Options, run


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL") or os.environ.get("NATS_URL")),
                    reason="the fault run restarts its own PostgreSQL and nats-server")
async def test_every_part_killed_or_restarted_loses_and_doubles_nothing(tmp_path):
    # a new seed each run covers other moments over time; the report names it to repeat one
    report = await run(Options(enrollments=250, kills=1, power_cut=True,
                               data_dir=tmp_path / "stack"))
    assert report.passed, report.format()
    assert all(fault.fired_at is not None for fault in report.faults), report.format()


@pytest.mark.skipif(bool(os.environ.get("NATS_URL")),
                    reason="the cluster run starts its own three nats-server nodes")
async def test_a_three_node_nats_cluster_loses_a_node_and_its_leader_and_nothing_else(tmp_path):
    """The production shape (R3 over three nodes, the flags of deploy/docker-compose.yml): one
    node SIGKILLed and restarted, later the events stream's leader, and the whole cluster
    restarted once."""
    report = await run(Options(enrollments=60, kills=0, mailers=1, restart_postgres=False,
                               nats_cluster=3, data_dir=tmp_path / "stack"))
    assert report.passed, report.format()
    assert all(fault.fired_at is not None for fault in report.faults), report.format()
