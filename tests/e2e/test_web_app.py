"""The web app's foundation against the running system: signing in and out, where a signed-out
request goes, CSRF, the session cookie, the sequence list and its actions, another workspace's
ids, escaping, and the language."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.e2e.test_flow import SEQUENCE
from tests.support import create_workspace, csrf_token_in, web_client

SCRIPT = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def other(stack) -> dict:
    return create_workspace(stack, "Rival Co", "rival@rival.example")


def main_of(page: str) -> str:
    return page[page.index("<main"):page.index("</main>")]


def anonymous(stack, **headers) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.gateway_url, timeout=30, headers=headers)


async def test_a_signed_out_request_goes_to_sign_in_and_comes_back(stack):
    async with anonymous(stack) as browser:
        answer = await browser.get("/campaigns?x=1")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/sign-in?next=%2Fcampaigns%3Fx%3D1"
        htmx = await browser.get("/campaigns", headers={"HX-Request": "true"})
        assert htmx.headers["HX-Redirect"].startswith("/sign-in")
        page = await browser.get("/sign-in?next=/campaigns%3Fx%3D1")
        signed = await browser.post("/sign-in", data={
            "email": stack.workspace["user_email"], "password": stack.workspace["password"],
            "csrf_token": csrf_token_in(page.text), "next": "/campaigns?x=1"})
        assert signed.status_code == 303 and signed.headers["location"] == "/campaigns?x=1"
        cookie = signed.headers["set-cookie"]
        assert "seq_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert "Secure" not in cookie  # the dev stack's public URL is http
        assert (await browser.get("/campaigns")).status_code == 200


async def test_a_wrong_password_is_refused_with_a_message_and_no_session(stack):
    async with anonymous(stack) as browser:
        page = await browser.get("/sign-in")
        answer = await browser.post("/sign-in", data={
            "email": stack.workspace["user_email"], "password": "not the password",
            "csrf_token": csrf_token_in(page.text)})
        assert answer.status_code == 422
        assert "That email and password do not match." in answer.text
        assert "seq_session" not in answer.headers.get("set-cookie", "")
        assert (await browser.get("/campaigns")).status_code == 303


async def test_sign_in_without_its_form_token_is_refused(stack):
    async with anonymous(stack) as browser:
        answer = await browser.post("/sign-in", data={
            "email": stack.workspace["user_email"], "password": stack.workspace["password"]})
        assert answer.status_code == 403
        assert (await browser.get("/campaigns")).status_code == 303


async def test_after_sign_in_only_a_path_of_this_site_is_followed(stack):
    async with anonymous(stack) as browser:
        for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
            page = await browser.get("/sign-in")
            answer = await browser.post("/sign-in", data={
                "email": stack.workspace["user_email"], "password": stack.workspace["password"],
                "csrf_token": csrf_token_in(page.text), "next": target})
            assert answer.headers["location"] == "/", target


async def test_sign_out_ends_the_session_for_good(stack):
    async with web_client(stack) as browser:
        session = browser.cookies["seq_session"]
        answer = await browser.post("/sign-out", data={"csrf_token": browser.csrf})
        assert answer.status_code == 303
    async with anonymous(stack) as stolen:
        stolen.cookies.set("seq_session", session)
        assert (await stolen.get("/campaigns")).status_code == 303


async def test_the_sequence_list_escapes_names_and_pause_resume_archive_work(stack, api):
    created = await api.post("/v1/sequences", json={**SEQUENCE, "name": SCRIPT})
    sequence_id = created.json()["id"]
    async with web_client(stack) as browser:
        page = (await browser.get("/campaigns")).text
        assert SCRIPT not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "0 enrolled · live" in page

        # no token, or another session's: refused, nothing changed
        refused = await browser.post(f"/sequences/{sequence_id}/pause")
        assert refused.status_code == 403
        assert (await api.get(f"/v1/sequences/{sequence_id}")).json()["state"] == "live"

        paused = await browser.post(f"/sequences/{sequence_id}/pause",
                                    data={"csrf_token": browser.csrf})
        assert paused.status_code == 303
        assert (await api.get(f"/v1/sequences/{sequence_id}")).json()["state"] == "paused"
        await browser.post(f"/sequences/{sequence_id}/resume", headers={
            "X-CSRF-Token": browser.csrf, "HX-Request": "true"})
        assert (await api.get(f"/v1/sequences/{sequence_id}")).json()["state"] == "live"

        confirm = await browser.get(f"/sequences/{sequence_id}/archive")
        assert confirm.status_code == 200 and "This cannot be undone." in confirm.text
        assert (await api.get(f"/v1/sequences/{sequence_id}")).json()["state"] == "live"
        await browser.post(f"/sequences/{sequence_id}/archive", data={"csrf_token": browser.csrf})
        assert (await api.get(f"/v1/sequences/{sequence_id}")).json()["state"] == "archived"


async def test_another_workspaces_sequence_is_the_same_not_found_as_an_unknown_one(stack, api,
                                                                                    other):
    ours = (await api.post("/v1/sequences", json=SEQUENCE)).json()["id"]
    async with web_client(stack, other["user_email"], other["password"]) as rival:
        theirs = await rival.get(f"/sequences/{ours}/archive")
        unknown = await rival.get(f"/sequences/{uuid.uuid4()}/archive")
        malformed = await rival.get("/sequences/not-an-id/archive")
        assert theirs.status_code == unknown.status_code == malformed.status_code == 404
        assert main_of(theirs.text) == main_of(unknown.text)
        assert SEQUENCE["name"] not in (await rival.get("/campaigns")).text
        acted = await rival.post(f"/sequences/{ours}/pause", data={"csrf_token": rival.csrf})
        assert acted.status_code == 404
    assert (await api.get(f"/v1/sequences/{ours}")).json()["state"] == "live"


async def test_pages_follow_the_browser_language_then_the_users_setting(stack):
    async with web_client(stack, language="ko-KR,ko;q=0.9") as korean:
        page = (await korean.get("/campaigns")).text
        assert '<html lang="ko">' in page and "자동 후속" in page
        await korean.post("/preferences", data={"csrf_token": korean.csrf, "language": "en",
                                                "back": "/campaigns"})
        page = (await korean.get("/campaigns")).text
        assert '<html lang="en">' in page and "Auto follow-up" in page
        await korean.post("/preferences", data={"csrf_token": korean.csrf, "language": "auto"})
        assert '<html lang="ko">' in (await korean.get("/campaigns")).text


async def test_an_unknown_address_is_the_apps_page_for_browsers_and_problem_details_else(stack):
    async with web_client(stack) as browser:
        page = await browser.get("/no-such-page", headers={"Accept": "text/html"})
        assert page.status_code == 404 and "<h1>Not found</h1>" in page.text
        api = await browser.get("/v1/no-such-thing", headers={"Accept": "text/html"})
        assert api.headers["content-type"] == "application/problem+json"
        method = await browser.put("/campaigns", headers={"Accept": "text/html"})
        assert method.status_code == 405 and "text/html" in method.headers["content-type"]
        assert method.headers["allow"] == "GET"


async def test_a_password_hashed_with_earlier_parameters_signs_in_and_is_rehashed(stack):
    """A hash from before the gateway's lighter Argon2id profile (argon2-cffi's 64 MiB
    defaults) still signs in, and is remade with today's parameters then."""
    from argon2 import PasswordHasher
    from sqlalchemy import text

    from sequences.db import create_engine

    person = create_workspace(stack, "Rehash Co", "rehash@rehash.example")
    engine = create_engine(stack.database_url, pool_size=1)
    query = text("SELECT password_hash FROM gateway.users WHERE user_id = :u")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE gateway.users SET password_hash = :h WHERE user_id = :u"),
                               {"h": PasswordHasher().hash(person["password"]),
                                "u": person["user_id"]})
        async with anonymous(stack) as browser:
            page = await browser.get("/sign-in")
            signed = await browser.post("/sign-in", data={
                "email": person["user_email"], "password": person["password"],
                "csrf_token": csrf_token_in(page.text)})
            assert signed.status_code == 303
        async with engine.connect() as conn:
            stored = (await conn.execute(query, {"u": person["user_id"]})).scalar_one()
    finally:
        await engine.dispose()
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
