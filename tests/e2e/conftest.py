from __future__ import annotations

import pytest

from sequences.devstack.stack import Stack
from tests.support import stack_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The whole system, every service its own process, on free ports, with a movable clock."""
    with Stack(stack_config(tmp_path_factory)) as running:
        yield running


@pytest.fixture
async def api(stack):
    async with stack.api_client() as client:
        yield client
