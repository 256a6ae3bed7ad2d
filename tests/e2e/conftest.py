from __future__ import annotations

import os

import pytest

from sequences.devstack.stack import Stack, StackConfig

pytestmark = pytest.mark.e2e


def stack_config(tmp_path_factory, **overrides) -> StackConfig:
    return StackConfig(
        data_dir=tmp_path_factory.mktemp("stack"),
        gateway_port=0, nats_port=0, smtp_port=0, mail_viewer_port=0,
        log_to_files=True,
        database_url=os.environ.get("DATABASE_URL"),
        nats_url=os.environ.get("NATS_URL"),
        **overrides,
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The whole system, every service its own process, on free ports, with a movable clock."""
    with Stack(stack_config(tmp_path_factory)) as running:
        yield running


@pytest.fixture
async def api(stack):
    async with stack.api_client() as client:
        yield client
