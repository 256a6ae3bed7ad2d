from __future__ import annotations

import os

import pytest

from sequences.devstack.stack import Stack, StackConfig

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The whole system, every service its own process, on free ports, with a movable clock."""
    config = StackConfig(
        data_dir=tmp_path_factory.mktemp("stack"),
        gateway_port=0, nats_port=0, smtp_port=0, mail_viewer_port=0,
        log_to_files=True,
        database_url=os.environ.get("DATABASE_URL"),
        nats_url=os.environ.get("NATS_URL"),
    )
    with Stack(config) as running:
        yield running
