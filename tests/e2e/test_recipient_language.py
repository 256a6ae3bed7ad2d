"""What recipients see follows the sequence's language: the email footer (plain text and HTML)
and the unsubscribe page it links to, Korean or English, end to end."""

from __future__ import annotations

import html
import re

import httpx
import pytest

from sequences.signing import Signer
from tests.e2e.test_flow import SEQUENCE, mail_to, new_contact
from tests.e2e.test_mailer import enroll
from tests.support import eventually

KOREAN = {"footer": "더 이상 이 메일을 받지 않으시려면 수신 거부: ", "link": "수신 거부",
          "title": "<title>수신 거부</title>", "button": "수신 거부",
          "done": "앞으로 이 메일을 보내 드리지 않겠습니다.", "browser": "en-US,en;q=0.9"}
ENGLISH = {"footer": "No longer want these emails? Unsubscribe: ", "link": "Unsubscribe",
           "title": "<title>Unsubscribe</title>", "button": "Unsubscribe",
           "done": "You will not receive these emails again.", "browser": "ko-KR,ko;q=0.9"}


async def first_email_of(stack, api, **sequence):
    """A new contact enrolled in a new sequence: (the sequence's view, the contact, its email)."""
    contact_id, address = await new_contact(api)
    sequence_id, _ = await enroll(api, contact_id, **sequence)
    view = (await api.get(f"/v1/sequences/{sequence_id}")).json()

    async def delivered():
        return mail_to(stack, address)

    [email] = await eventually(delivered, timeout=30)
    return view, contact_id, email


@pytest.mark.parametrize("language, says", [("ko", KOREAN), ("en", ENGLISH)])
async def test_the_footer_and_the_unsubscribe_page_are_in_the_sequence_s_language(
        stack, api, language, says):
    view, contact_id, email = await first_email_of(stack, api, language=language)
    assert view["language"] == language
    plain = email.get_body(("plain",)).get_content()
    page_html = email.get_body(("html",)).get_content()
    assert says["footer"] + email["List-Unsubscribe"].strip("<>") in plain
    link = re.search(r'<a href="([^"]+)">([^<]+)</a>', page_html)
    assert link[2] == says["link"]
    other = ENGLISH if language == "ko" else KOREAN
    assert other["link"] not in plain + page_html
    url = html.unescape(link[1])
    assert url == email["List-Unsubscribe"].strip("<>")

    async with httpx.AsyncClient(timeout=10) as client:
        # the sequence's language, whatever the browser prefers
        page = await client.get(url, headers={"Accept-Language": says["browser"]})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert f'<html lang="{language}">' in page.text and says["title"] in page.text
        assert re.findall(r"<button\b[^>]*>([^<]*)</button>", page.text) == [says["button"]]
        assert (await api.get(f"/v1/contacts/{contact_id}")).json()["opted_out"] is False

        # the page's form posts back to the same URL, with nothing in it
        done = await client.post(url, content=b"",
                                 headers={"content-type": "application/x-www-form-urlencoded"})
        assert done.status_code == 200, done.text
        assert f'<html lang="{language}">' in done.text and says["done"] in done.text
        assert "<form" not in done.text

    async def opted_out():
        return (await api.get(f"/v1/contacts/{contact_id}")).json()["opted_out"]

    assert await eventually(opted_out)


async def test_a_sequence_without_a_language_is_english(stack, api):
    view, _, email = await first_email_of(stack, api)
    assert view["language"] == "en"
    assert ENGLISH["footer"] in email.get_body(("plain",)).get_content()


async def test_an_unknown_language_is_refused_naming_the_field(api):
    refused = await api.post("/v1/sequences", json={**SEQUENCE, "language": "fr"})
    assert refused.status_code == 422
    assert [e["field"] for e in refused.json()["errors"]] == ["language"]


async def test_a_forged_token_is_404_and_an_old_one_follows_the_browser(stack, api):
    _, contact_id, email = await first_email_of(stack, api, language="ko")
    url = email["List-Unsubscribe"].strip("<>")
    base, token = url.rsplit("/", 1)
    body, mac = token.split(".")
    async with httpx.AsyncClient(timeout=10) as client:
        for forged in (f"{body}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",  # signature off
                       f"{body[:-2]}x.{mac}"):  # payload changed (e.g. another language)
            assert (await client.get(f"{base}/{forged}")).status_code == 404
            assert (await client.post(f"{base}/{forged}")).status_code == 404

        # a link mailed before tokens carried the language: the browser's, else English
        signer = Signer(stack.env()["SEQUENCES_SECRET"].encode())
        payload = signer.verify("unsubscribe", token)
        assert payload["l"] == "ko"
        old = signer.sign("unsubscribe", {k: v for k, v in payload.items() if k != "l"})
        korean = await client.get(f"{base}/{old}", headers={"Accept-Language": "ko-KR,ko;q=0.9"})
        assert korean.status_code == 200 and '<html lang="ko">' in korean.text
        english = await client.get(f"{base}/{old}")
        assert '<html lang="en">' in english.text
    assert (await api.get(f"/v1/contacts/{contact_id}")).json()["opted_out"] is False
