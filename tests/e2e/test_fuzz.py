"""Schemathesis fuzzes every operation of the OpenAPI document against the running system: no
5xx, and every response matches the documented schema and status codes. Below it, the defects
it found once, pinned."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_flow import SEQUENCE
from tests.support import eventually


def test_fuzzing_the_api_finds_no_server_error_and_no_schema_violation(stack):
    # one worker: with two, hypothesis's ast.parse in threads hit a CPython 3.11 error once.
    schemathesis = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [str(schemathesis), "run", f"{stack.gateway_url}/openapi.json",
         "--checks", "not_a_server_error,response_schema_conformance,status_code_conformance,"
         "ignored_auth,allow_header_conformance,unsupported_method",
         "--max-examples", "15", "--seed", "20261126", "--workers", "1",
         "--request-timeout", "30", "--header", f"Authorization: Bearer {stack.api_key}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-5000:]
    assert " passed" in result.stdout


@pytest.mark.parametrize("method, path, allow", [
    ("DELETE", "/v1/sequences", "GET, POST"),
    ("PUT", "/v1/contacts/0b6f3d9e-6c1a-4f5e-9a57-2d8c1e4b7a10", "DELETE, GET, PATCH"),
    # the import, not a contact named "import" (whose GET, PATCH and DELETE would say 422)
    ("OPTIONS", "/v1/contacts/import", "POST"),
    ("GET", "/v1/contacts/import", "POST"),
    ("PATCH", "/v1/contacts/import", "POST"),
    ("DELETE", "/v1/contacts/import", "POST"),
])
async def test_a_method_the_path_does_not_take_answers_405_with_allow(api, method, path, allow):
    answer = await api.request(method, path)
    assert answer.status_code == 405
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["allow"] == allow


@pytest.fixture
async def sequence_id(api) -> str:
    return (await api.post("/v1/sequences", json=SEQUENCE)).json()["id"]


@pytest.mark.parametrize("start", ["-6955913339", "1999-12-31T23:00:00Z", "2200-01-01T00:00:00"])
async def test_a_schedule_start_outside_2000_to_2200_is_refused_naming_it(api, sequence_id, start):
    answer = await api.get(f"/v1/sequences/{sequence_id}/schedule", params={"start": start})
    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["errors"]] == ["query.start"]


async def test_a_schedule_start_in_range_is_previewed(api, sequence_id):
    async def previewed():  # once the scheduler has read the new sequence from the log
        answer = await api.get(f"/v1/sequences/{sequence_id}/schedule",
                               params={"start": "2027-03-12T10:00:00+09:00"})
        return answer if answer.status_code != 404 else None

    answer = await eventually(previewed)
    assert answer.status_code == 200, answer.text
    assert answer.json()["start"].startswith("2027-03-12T10:00:00")
