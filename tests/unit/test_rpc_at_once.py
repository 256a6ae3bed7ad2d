"""A request handler that may answer several requests at once (`rpc.AtOnce`): no more than its
count run together, the next waits for a free slot, and every one is answered."""

from __future__ import annotations

import asyncio

from sequences.messaging.rpc import _several_at_once


async def test_no_more_than_the_count_run_at_once_and_every_request_is_answered():
    running, most, answered = set(), 0, []
    release = asyncio.Event()

    async def respond(msg):
        nonlocal most
        running.add(msg)
        most = max(most, len(running))
        await release.wait()
        running.discard(msg)
        answered.append(msg)

    accept = _several_at_once(respond, 2)
    await accept("a")
    await accept("b")
    third = asyncio.create_task(accept("c"))  # as NATS would hand over the next message
    await asyncio.sleep(0.01)
    assert running == {"a", "b"} and not third.done()  # the third waits for a free slot
    release.set()
    await third
    while len(answered) < 3:
        await asyncio.sleep(0.01)
    assert most == 2 and sorted(answered) == ["a", "b", "c"]
