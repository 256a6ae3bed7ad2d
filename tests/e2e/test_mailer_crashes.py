"""Exactly once in effect: 500 sends while the mailer is SIGKILLed at random moments."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter

from sequences.devstack.capture import read_captured
from tests.e2e.test_flow import SEQUENCE
from tests.support import eventually

SENDS = 500


async def test_500_sends_with_the_mailer_killed_at_random_arrive_exactly_once(stack, api):
    tag = f"crash-{uuid.uuid4().hex[:6]}"
    contacts = [{"email": f"c{i}.{tag}@customer.example", "name": f"고객{i}", "company": "회사",
                 "tags": [tag]} for i in range(SENDS)]
    csv_text = "name,company,email,tags\n" + "\n".join(
        f"{c['name']},{c['company']},{c['email']},{tag}" for c in contacts)
    imported = await api.post("/v1/contacts/import", content=csv_text.encode(),
                              headers={"content-type": "text/csv"})
    assert imported.json()["created"] == SENDS
    sequence_id = (await api.post("/v1/sequences", json={
        **SEQUENCE, "steps": SEQUENCE["steps"][:1],
        "send_policy": {"mode": "as_soon_as_due"}})).json()["id"]
    result = await api.post(f"/v1/sequences/{sequence_id}/enrollments/bulk",
                            json={"segment": {"tag": tag}})
    assert result.json()["enrolled"] == SENDS

    rng = random.Random()
    for _ in range(4):  # kill it mid-stream, at a random moment, four times
        await asyncio.sleep(rng.uniform(0.2, 1.0))
        stack.kill_service("mailer")
        stack.start_service("mailer")

    wanted = {c["email"] for c in contacts}

    def received() -> Counter:
        return Counter(m["To"] for m in read_captured(stack.mail_dir) if m["To"] in wanted)

    async def all_arrived():
        return len(received()) == SENDS

    await eventually(all_arrived, timeout=180, interval=0.5)
    await asyncio.sleep(2)  # room for a late duplicate
    counts = received()
    assert sorted(set(counts.values())) == [1], {k: v for k, v in counts.items() if v > 1}

    async def all_recorded():
        detail = (await api.get(f"/v1/sequences/{sequence_id}")).json()
        return detail["counts"]["done"] == SENDS

    await eventually(all_recorded, timeout=60, interval=0.5)
