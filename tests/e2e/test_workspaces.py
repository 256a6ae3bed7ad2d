"""Workspaces and API keys: every endpoint needs a key, and a key never reads, lists, counts or
changes another workspace's data (every operation of the OpenAPI document is tried with a key
of another workspace)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid

import httpx
import pytest

from tests.e2e.test_flow import SEQUENCE, new_contact
from tests.support import create_workspace, eventually

# email, then an SMS step at once: the enrollment makes a task
OURS = {**SEQUENCE, "sender_email": "ours@workspace-a.example", "steps": [
    SEQUENCE["steps"][0], {"channel": "sms", "wait_days": 0, "body": "{{고객명}}님께 문자"}]}
THEIRS = {**SEQUENCE, "sender_email": "theirs@workspace-b.example"}


@pytest.fixture(scope="module")
def other(stack) -> dict:
    return create_workspace(stack, "Other Co", "rival@other.example")


def client(stack, key: str | None) -> httpx.AsyncClient:
    # (as bytes: a key of non-ASCII characters goes out as the UTF-8 a client would send)
    headers = {"Authorization": f"Bearer {key}".encode()} if key else {}
    return httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, timeout=30)


async def ours(stack, api) -> dict:
    """Workspace A's things: a sequence, a contact enrolled in it, a task, a key, a user, a
    webhook and one of its deliveries."""
    webhook = (await api.post("/v1/webhooks", json={
        "url": "https://127.0.0.1:9/nobody-listens", "event_types": ["ContactEnrolled"]})).json()
    sequence_id = (await api.post("/v1/sequences", json=OURS)).json()["id"]
    sequence = (await api.get(f"/v1/sequences/{sequence_id}")).json()
    contact_id, _ = await new_contact(api)
    enrolled = await api.post(f"/v1/sequences/{sequence_id}/enrollments",
                              json={"contact_id": contact_id})
    assert enrolled.status_code == 201, enrolled.text

    async def task():
        items = (await api.get("/v1/tasks", params={"sequence_id": sequence_id})).json()["items"]
        return items[0] if items else None

    async def delivery():
        items = (await api.get(f"/v1/webhooks/{webhook['webhook_id']}/deliveries")).json()
        return items["items"][0] if items["items"] else None

    key = (await api.post("/v1/api-keys", json={"name": "ours"})).json()
    box = await api.post("/v1/mailboxes", json=_mailbox("box@workspace-a.example"))
    assert box.status_code == 201, box.text
    suppressed = f"ours-{uuid.uuid4().hex[:6]}.example"
    assert (await api.post("/v1/suppressions", json={"value": suppressed})).status_code == 201
    return {
        "value": suppressed, "address": OURS["sender_email"], "mailbox_id": box.json()["id"],
        "workspace_id": stack.workspace["workspace_id"], "user_id": stack.workspace["user_id"],
        "sequence_id": sequence_id, "step_id": sequence["steps"][0]["step_id"],
        "contact_id": contact_id, "enrollment_id": enrolled.json()["id"],
        "task_id": (await eventually(task, timeout=30))["task_id"], "key_id": key["key_id"],
        "webhook_id": webhook["webhook_id"],
        "delivery_id": (await eventually(delivery, timeout=30))["delivery_id"],
    }


# a valid body for each operation that takes one (their ids where ids are asked for)
def bodies(ids: dict) -> dict[tuple[str, str], dict]:
    return {
        ("post", "/v1/sequences"): {"json": THEIRS},
        ("put", "/v1/sequences/{sequence_id}/steps"): {"json": {"steps": SEQUENCE["steps"]}},
        ("post", "/v1/sequences/{sequence_id}/enrollments"):
            {"json": {"contact_id": ids["contact_id"]}},
        ("post", "/v1/sequences/{sequence_id}/enrollments/bulk"):
            {"json": {"segment": {"all": True}}},
        ("post", "/v1/sequences/{sequence_id}/steps/{step_id}/preview"):
            {"json": {"contact_id": ids["contact_id"]}},
        ("post", "/v1/contacts"):
            {"json": {"name": "Lee", "email": f"lee.{uuid.uuid4().hex[:6]}@b.example"}},
        ("post", "/v1/contacts/import"): {
            "content": f"name,email\nPark,park.{uuid.uuid4().hex[:6]}@b.example\n".encode(),
            "headers": {"content-type": "text/csv"}},
        ("patch", "/v1/contacts/{contact_id}"): {"json": {"name": "taken over"}},
        ("post", "/v1/tasks/{task_id}/complete"): {"json": {"outcome": "done"}},
        ("post", "/v1/users"): {"json": {"email": f"u.{uuid.uuid4().hex[:6]}@b.example"}},
        ("post", "/v1/api-keys"): {"json": {"name": "theirs"}},
        ("post", "/v1/dev/clock/advance"): {"json": {"by": "0s"}},
        ("post", "/v1/webhooks"):
            {"json": {"url": "https://b.example/hook", "event_types": ["*"]}},
        ("patch", "/v1/webhooks/{webhook_id}"): {"json": {"legacy_headers": True}},
        ("post", "/v1/webhooks/{webhook_id}/secret/rotate"): {"json": {}},
        ("post", "/v1/suppressions"): {"json": {"value": "theirs.example"}},
        ("put", "/v1/calendar"): {"json": {}},
        ("patch", "/v1/sequences/{sequence_id}"): {"json": {"name": "taken over"}},
        ("post", "/v1/mailboxes"): {"json": _mailbox(f"box.{uuid.uuid4().hex[:6]}@b.example")},
        ("put", "/v1/mailboxes/{mailbox_id}"): {"json": _mailbox("box@workspace-a.example")},
        ("post", "/v1/sequences/{sequence_id}/variants/winner"): {"json": {"letter": "A"}},
        ("post", "/v1/suppressions/import"): {
            "content": b"value\nlee@theirs.example\n", "headers": {"content-type": "text/csv"}},
    }


def _mailbox(address: str) -> dict:
    return {"address": address, "smtp": {"host": "127.0.0.1", "port": 25, "security": "none"}}


def operations(document: dict) -> list[tuple[str, str, dict]]:
    """Every operation that needs a key (the signed links in emails and the OAuth provider's
    signed redirect back take none)."""
    return [(method, path, operation)
            for path, item in document["paths"].items()
            for method, operation in item.items()
            if not {"links in emails", "signed redirects"} & set(operation.get("tags", []))]


async def test_every_operation_with_a_key_of_another_workspace_finds_nothing_of_ours(
        stack, api, other):
    mine = await ours(stack, api)
    document = (await api.get("/openapi.json")).json()
    ours_text = set(map(str, mine.values()))
    tried = set()
    async with client(stack, other["api_key"]) as theirs:
        for method, path, operation in operations(document):
            url = re.sub(r"\{(\w+)\}", lambda m: str(mine[m.group(1)]), path)
            body = bodies(mine).get((method, path), {})
            response = await theirs.request(method, url, **body)
            asked = url + json.dumps(body.get("json"))  # an answer may name what it was asked
            tried.add((method, path))
            if "{" in path:  # names one of our resources: as if it did not exist
                assert response.status_code in (403, 404), (method, path, response.text)
            else:  # theirs only: lists, counts, creations in their own workspace
                assert response.status_code < 300, (method, path, response.text)
            leaked = {value for value in ours_text if value in response.text
                      and value not in asked}
            assert not leaked, (method, path, leaked)
        # our contact into their sequence, and their contact into ours: neither is found
        their_sequence = (await theirs.post("/v1/sequences", json=THEIRS)).json()["id"]
        their_contact, _ = await new_contact(theirs)
        mixed = [await theirs.post(f"/v1/sequences/{their_sequence}/enrollments",
                                   json={"contact_id": mine["contact_id"]}),
                 await api.post(f"/v1/sequences/{mine['sequence_id']}/enrollments",
                                json={"contact_id": their_contact})]
        assert [(r.status_code, r.json()["errors"][0]["field"]) for r in mixed] == [
            (404, "contact_id"), (404, "contact_id")]
    assert tried == {(m, p) for m, p, _ in operations(document)}
    assert len(tried) > 30

    # and nothing of ours changed
    sequence = (await api.get(f"/v1/sequences/{mine['sequence_id']}")).json()
    contact = (await api.get(f"/v1/contacts/{mine['contact_id']}")).json()
    enrollment = (await api.get(f"/v1/enrollments/{mine['enrollment_id']}")).json()
    keys = (await api.get("/v1/api-keys")).json()["items"]
    tasks = (await api.get("/v1/tasks", params={"which": "all"})).json()["items"]
    assert (sequence["state"], sequence["steps"][-1]["channel"], sequence["enrolled"]) == (
        "live", "sms", 1)
    assert (contact["name"], contact["opted_out"]) == ("김민수", False)
    assert enrollment["status"] == "active"
    assert [k["revoked_at"] for k in keys if k["key_id"] == mine["key_id"]] == [None]
    assert [t["state"] for t in tasks if t["task_id"] == mine["task_id"]] == ["open"]
    webhook = (await api.get(f"/v1/webhooks/{mine['webhook_id']}")).json()
    assert (webhook["active"], webhook["legacy_headers"], webhook["rotation_ends_at"]) == (
        True, False, None)


async def test_a_missing_malformed_unknown_or_revoked_key_gets_401(stack, api):
    made = await api.post("/v1/api-keys", json={"name": "short-lived"})
    assert made.status_code == 201
    key = made.json()
    assert key["key"].startswith(key["prefix"]) and len(key["key"]) > 40
    async with client(stack, key["key"]) as fresh:
        assert (await fresh.get("/v1/me")).json()["workspace_id"] == stack.workspace[
            "workspace_id"]
    revoked = await api.delete(f"/v1/api-keys/{key['key_id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    wrong = [None, "sqk_" + "x" * 40, key["key"], "not-a-key", "é" * 30]
    for candidate in wrong:
        async with client(stack, candidate) as caller:
            response = await caller.get("/v1/sequences")
        assert response.status_code == 401, (candidate, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["errors"][0]["field"] == "authorization"
    basic = await api.get("/v1/sequences", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401
    # the links in emails need no key; /healthz and /readyz neither
    async with client(stack, None) as anonymous:
        assert (await anonymous.get("/readyz")).status_code == 200
        assert (await anonymous.get("/t/forged.gif")).status_code == 404


async def test_keys_are_listed_by_prefix_and_a_repeat_never_shows_the_key_again(api):
    headers = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    first = await api.post("/v1/api-keys", json={"name": "ci"}, headers=headers)
    again = await api.post("/v1/api-keys", json={"name": "ci"}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json()["key"] and again.json()["key"] is None
    assert again.json()["key_id"] == first.json()["key_id"]
    listed = (await api.get("/v1/api-keys", params={"limit": 500})).json()["items"]
    [mine] = [k for k in listed if k["key_id"] == first.json()["key_id"]]
    assert mine["prefix"] == first.json()["prefix"] and "key" not in mine
    assert first.json()["key"] not in json.dumps(listed)
    unknown_user = await api.post("/v1/api-keys", json={"name": "x", "user_id": str(uuid.uuid4())})
    assert (unknown_user.status_code, unknown_user.json()["errors"][0]["field"]) == (404, "user_id")


def test_create_workspace_refuses_a_bad_email(stack):
    made = subprocess.run(
        [sys.executable, "-m", "sequences.cli", "admin", "create-workspace", "X",
         "--email", "nope"], env={**os.environ, **stack.env()}, capture_output=True, text=True)
    assert made.returncode == 2 and "--email" in made.stderr


async def test_an_idempotency_key_is_kept_per_workspace(stack, api, other):
    key = {"Idempotency-Key": f"same-{uuid.uuid4()}"}
    body = {"name": "Choi", "email": f"choi.{uuid.uuid4().hex[:6]}@x.example"}
    ours_first = await api.post("/v1/contacts", json=body, headers=key)
    async with client(stack, other["api_key"]) as theirs:
        theirs_first = await theirs.post("/v1/contacts", json=body, headers=key)
        theirs_again = await theirs.post("/v1/contacts", json=body, headers=key)
    assert (ours_first.status_code, theirs_first.status_code) == (201, 201)
    assert theirs_first.json()["id"] != ours_first.json()["id"]  # not our answer replayed
    assert theirs_again.json() == theirs_first.json()
    assert theirs_again.headers.get("idempotent-replayed") == "true"


async def test_the_gateway_serves_the_published_asyncapi_document(stack, api):
    """GET /asyncapi.json (made on the first request, outside the gateway's own memory) is the
    document docs/asyncapi.json holds, and asked again the same."""
    from pathlib import Path

    published = json.loads((Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json")
                           .read_text())
    first = await api.get("/asyncapi.json")
    assert first.status_code == 200 and first.headers["content-type"] == "application/json"
    assert first.json() == published
    assert (await api.get("/asyncapi.json")).json() == published
