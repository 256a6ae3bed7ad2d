from __future__ import annotations

import pytest

from tests.support import in_own_workspace

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(shared_stack, request):
    """The whole system, every service its own process, on free ports, with a movable clock:
    the run's shared stack, in a workspace of this module's own. A module that needs settings,
    replicas or a clock of its own defines `stack` itself (test_mailer.py, ...)."""
    return in_own_workspace(shared_stack, request.module.__name__)


@pytest.fixture
async def api(stack):
    async with stack.api_client() as client:
        yield client
