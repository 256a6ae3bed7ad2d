"""OAuth2 mailboxes, the pure parts: the authorization URL (PKCE S256, the state, the
provider's offline-access parameters), what is kept of a token answer, the endpoints a
workspace may configure, and the settings form's sign-in choice."""

from __future__ import annotations

import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from pydantic import ValidationError

from contracts.commands import OAuthClientRequest
from sequences.oauth import PROVIDERS, OAuthClient, stored_tokens
from services.gateway.web.routes.mailboxes import request_of


def _google() -> OAuthClient:
    provider = PROVIDERS["google"]
    return OAuthClient(uuid.uuid4(), "google", "client-1", provider.authorize_url,
                       provider.token_url, provider.scopes, "secret")


def test_the_authorization_url_carries_an_s256_challenge_and_the_state():
    verifier = "v" * 64
    url = _google().authorization_url("https://app.example/oauth/callback", "signed.state",
                                      verifier)
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert url.startswith("https://accounts.google.com/o/oauth2/v2/auth?")
    assert query["code_challenge"] == create_s256_code_challenge(verifier)
    assert query["code_challenge_method"] == "S256" and query["state"] == "signed.state"
    assert query["access_type"] == "offline" and query["scope"] == "https://mail.google.com/"
    assert verifier not in url and "secret" not in url


def test_a_token_answer_keeps_the_old_refresh_token_when_none_comes_back():
    kept = stored_tokens({"access_token": "a1", "expires_in": 3599}, "r0")
    assert kept["access_token"] == "a1" and kept["refresh_token"] == "r0"
    assert 3500 < float(kept["expires_at"]) - time.time() <= 3599


@pytest.mark.parametrize("url", ["http://tokens.example/token", "ftp://127.0.0.1/x",
                                 "https:///nohost"])
def test_endpoints_are_https_or_loopback_http(url):
    with pytest.raises(ValidationError) as refused:
        OAuthClientRequest(client_id="c", token_url=url)
    assert refused.value.errors()[0]["loc"] == ("token_url",)


def test_loopback_http_is_allowed_for_a_local_server():
    assert OAuthClientRequest(client_id="c", token_url="http://127.0.0.1:9/token").token_url


def test_the_forms_sign_in_choice_becomes_auth_and_provider():
    body = request_of({"address": "a@b.example", "sign_in": "microsoft", "smtp.host": "h"})
    assert body["auth"] == "oauth2" and body["oauth_provider"] == "microsoft"
    assert "sign_in" not in body
    assert "auth" not in request_of({"address": "a@b.example", "sign_in": "password"})
