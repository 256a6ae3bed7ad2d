"""The gateway's click batches (services/gateway/click_batch.py), with a stand-in for the
mailer's answer: clicks go in batches per workspace, by size or after the wait, a failed batch
is sent again with the same click ids, a full queue drops and counts, and closing sends what
waits."""

from __future__ import annotations

import asyncio
import uuid

from contracts import commands as c
from contracts.values import TrackedRequest
from services.gateway.bus import ProblemError
from services.gateway.click_batch import ClickBatcher
from contracts.base import Problem

WORKSPACES = (uuid.uuid4(), uuid.uuid4())


def a_click(index: int = 0) -> c.SeenClick:
    return c.SeenClick(click_id=uuid.uuid4(), enrollment_id=uuid.uuid4(), step_id=uuid.uuid4(),
                       link_index=index, url="https://site.example/", seconds_ago=0,
                       request=TrackedRequest(method="GET", user_agent="Mozilla/5.0",
                                              client_ip="203.0.113.9"))


class Mailer:
    def __init__(self, failures: int = 0, refuse: bool = False):
        self.batches: list[c.RecordEmailClicks] = []
        self.failures, self.refuse = failures, refuse

    async def send(self, command: c.RecordEmailClicks):
        self.batches.append(command)
        if self.refuse:
            raise ProblemError(Problem(status=422, title="Invalid"))
        if self.failures:
            self.failures -= 1
            raise TimeoutError("no answer")


async def test_clicks_go_in_batches_per_workspace_by_size_and_after_the_wait():
    mailer = Mailer()
    batcher = ClickBatcher(mailer.send, max_batch=3, max_wait=0.05)
    batcher.start()
    clicks = [a_click(i) for i in range(4)]
    for i, click in enumerate(clicks):
        assert batcher.add(WORKSPACES[i % 2], click)
    for _ in range(200):
        if sum(len(b.clicks) for b in mailer.batches) == 4:
            break
        await asyncio.sleep(0.01)
    await batcher.close()
    assert all(len({click.click_id for click in b.clicks}) == len(b.clicks)
               for b in mailer.batches)
    sent = {(b.workspace_id, click.click_id) for b in mailer.batches for click in b.clicks}
    assert sent == {(WORKSPACES[i % 2], click.click_id) for i, click in enumerate(clicks)}
    # the first three in one round (one batch per workspace), the fourth after the wait
    assert sorted(len(b.clicks) for b in mailer.batches) == [1, 1, 2]
    assert all(click.seconds_ago >= 0 for b in mailer.batches for click in b.clicks)


async def test_a_batch_without_an_answer_is_sent_again_with_the_same_click_ids():
    mailer = Mailer(failures=2)
    batcher = ClickBatcher(mailer.send, max_batch=10, max_wait=0.01, backoff=0.01)
    batcher.start()
    batcher.add(WORKSPACES[0], a_click())
    for _ in range(200):
        if len(mailer.batches) == 3:
            break
        await asyncio.sleep(0.01)
    await batcher.close()
    assert len(mailer.batches) == 3  # two lost answers, then recorded
    assert len({b.clicks[0].click_id for b in mailer.batches}) == 1


async def test_a_refused_batch_is_not_sent_again():
    mailer = Mailer(refuse=True)
    batcher = ClickBatcher(mailer.send, max_wait=0.01, backoff=0.01)
    batcher.start()
    batcher.add(WORKSPACES[0], a_click())
    await batcher.close()
    assert len(mailer.batches) == 1


async def test_a_full_queue_drops_and_counts_and_closing_sends_what_waits():
    mailer = Mailer()
    batcher = ClickBatcher(mailer.send, capacity=2)  # not started: nothing leaves yet
    assert batcher.add(WORKSPACES[0], a_click()) and batcher.add(WORKSPACES[0], a_click())
    assert not batcher.add(WORKSPACES[0], a_click()) and batcher.dropped == 1
    await batcher.close()
    assert [len(b.clicks) for b in mailer.batches] == [2]
