"""Real servers for OAuth2 mailboxes in tests: a local OAuth2 authorization server (authorize
with PKCE, token, introspection, revocation by the test) and an SMTP server offering AUTH
XOAUTH2 and PLAIN over STARTTLS. No Google or Microsoft server is reachable from the test
machines; their endpoints are configuration, pointed here.

The authorization server is the standard library's HTTP server with OAuth's rules kept here
(authorization codes bound to the client, the redirect URI and the S256 challenge, checked with
authlib's `create_s256_code_challenge`; refresh tokens that can be revoked; access tokens that
can be expired early): authlib's own server classes need a Flask or Django request to sit on.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from authlib.oauth2.rfc7636 import create_s256_code_challenge

CLIENT_ID = "sequences-test-client"
CLIENT_SECRET = "test client secret value"


@dataclass
class OAuthServer:
    """Grants every consent for `user` (the test plays the person who clicks Allow)."""

    user: str = "rep@oauth.example"
    codes: dict = field(default_factory=dict)  # code -> (redirect_uri, challenge)
    refresh_tokens: set = field(default_factory=set)
    access_tokens: dict = field(default_factory=dict)  # token -> expires at (wall clock)
    token_requests: list = field(default_factory=list)  # grant types, in order
    garbage: bool = False  # the token endpoint answers something that is not JSON
    refuse_access: bool = False  # introspection calls every access token inactive
    deny: bool = False  # the person presses "Deny" on the consent page
    lifetime: int = 3600

    def start(self) -> OAuthServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if parts.path == "/introspect":  # Dovecot's tokeninfo lookup: GET ?token=
                    return self._answer(200, server.introspect(query.get("token", "")))
                if parts.path != "/authorize":
                    return self._answer(404, {"error": "not_found"})
                self.send_response(302)
                self.send_header("Location", server.authorize(query))
                self.end_headers()

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if self.path == "/token":
                    if server.garbage:
                        return self._raw(200, b"<html>Service Unavailable</html>", "text/html")
                    return self._answer(*server.token(form, self.headers.get("Authorization")))
                if self.path == "/introspect":  # Dovecot's oauth2 passdb asks here
                    return self._answer(200, server.introspect(form.get("token", "")))
                self._answer(404, {"error": "not_found"})

            def _answer(self, status: int, body: dict):
                self._raw(status, json.dumps(body).encode(), "application/json")

            def _raw(self, status: int, body: bytes, content_type: str):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._http.shutdown()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def client_settings(self) -> dict:
        """The body of PUT /v1/mailboxes/oauth-clients/{provider} for this server."""
        return {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                "authorize_url": f"{self.base_url}/authorize",
                "token_url": f"{self.base_url}/token", "scopes": ["https://mail.google.com/"]}

    # --- the endpoints -------------------------------------------------------------------

    def authorize(self, query: dict) -> str:
        redirect = query["redirect_uri"]
        if (query.get("client_id") != CLIENT_ID or query.get("response_type") != "code"
                or query.get("code_challenge_method") != "S256"):
            return f"{redirect}?{urlencode({'error': 'invalid_request', 'state': query['state']})}"
        if self.deny:
            return f"{redirect}?{urlencode({'error': 'access_denied', 'state': query['state']})}"
        code = secrets.token_urlsafe(16)
        self.codes[code] = (redirect, query["code_challenge"])
        return f"{redirect}?{urlencode({'code': code, 'state': query['state']})}"

    def token(self, form: dict, authorization: str | None) -> tuple[int, dict]:
        self.token_requests.append(form.get("grant_type"))
        if not self._client_authenticated(form, authorization):
            return 401, {"error": "invalid_client"}
        if form.get("grant_type") == "authorization_code":
            redirect, challenge = self.codes.pop(form.get("code", ""), (None, None))
            if (redirect is None or redirect != form.get("redirect_uri")
                    or create_s256_code_challenge(form.get("code_verifier", "")) != challenge):
                return 400, {"error": "invalid_grant", "error_description": "bad code"}
            refresh = secrets.token_urlsafe(24)
            self.refresh_tokens.add(refresh)
            return 200, {**self._access(), "refresh_token": refresh}
        if form.get("grant_type") == "refresh_token":
            if form.get("refresh_token") not in self.refresh_tokens:
                return 400, {"error": "invalid_grant",
                             "error_description": "Token has been expired or revoked."}
            return 200, self._access()
        return 400, {"error": "unsupported_grant_type"}

    def introspect(self, token: str) -> dict:
        if not self.valid(token):
            return {"active": False}
        return {"active": True, "username": self.user, "email": self.user}

    # --- what the test does --------------------------------------------------------------

    def valid(self, token: str) -> bool:
        return not self.refuse_access and self.access_tokens.get(token, 0) > time.time()

    def expire_access_tokens(self) -> None:
        """Every access token stops working now (as if its hour had passed early)."""
        self.access_tokens.clear()

    def revoke(self) -> None:
        """The person removed the app's access: refresh and access tokens stop working."""
        self.refresh_tokens.clear()
        self.access_tokens.clear()

    def _access(self) -> dict:
        token = secrets.token_urlsafe(24)
        self.access_tokens[token] = time.time() + self.lifetime
        return {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime}

    @staticmethod
    def _client_authenticated(form: dict, authorization: str | None) -> bool:
        if authorization and authorization.startswith("Basic "):
            decoded = base64.b64decode(authorization[6:]).decode()
            client_id, _, secret = decoded.partition(":")
            return unquote_plus(client_id) == CLIENT_ID and unquote_plus(secret) == CLIENT_SECRET
        return form.get("client_id") == CLIENT_ID and form.get("client_secret") == CLIENT_SECRET


# --- SMTP with XOAUTH2 and PLAIN over STARTTLS -----------------------------------------------


class OAuthSmtpHandler:
    """Keeps what it accepts; AUTH XOAUTH2 checks the bearer token with the OAuth server,
    PLAIN the password."""

    def __init__(self, oauth: OAuthServer, password: str):
        self.oauth = oauth
        self.password = password
        self.received: list = []
        self.logins: list[str] = []  # mechanisms that succeeded

    async def handle_DATA(self, server, session, envelope):
        self.received.append(envelope)
        # one message per connection: the next send logs in again (with the token it holds
        # then), as a client whose pooled connection the server timed out
        asyncio.get_running_loop().call_later(0.05, server.transport.close)
        return "250 OK"

    async def auth_XOAUTH2(self, server, args):
        try:
            fields = base64.b64decode(args[1]).decode().split("\x01")
            token = next(f for f in fields if f.startswith("auth=Bearer ")).split(" ", 1)[1]
        except (IndexError, StopIteration, ValueError):
            return AuthResult(success=False, handled=False)
        if not self.oauth.valid(token):
            return AuthResult(success=False, handled=False)
        self.logins.append("XOAUTH2")
        return AuthResult(success=True, auth_data=token)

    def check_password(self, server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.password.decode() == self.password
        if ok:
            self.logins.append(mechanism)
        return AuthResult(success=ok, handled=False)


def start_smtp(handler: OAuthSmtpHandler, port: int, tls_context,
               mechanisms_excluded=()) -> Controller:
    controller = Controller(handler, hostname="127.0.0.1", port=port,
                            authenticator=handler.check_password, auth_required=True,
                            auth_require_tls=True, require_starttls=True,
                            tls_context=tls_context,
                            auth_exclude_mechanism=list(mechanisms_excluded))
    controller.start()
    return controller


def certificate(directory, name: str, host: str) -> tuple[str, str]:
    """A self-signed certificate for `host` (an IP or a name), and its key."""
    cert, key = str(directory / f"{name}.pem"), str(directory / f"{name}.key")
    alt = f"IP:{host}" if host[0].isdigit() else f"DNS:{host}"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", f"/CN={host}", "-addext", f"subjectAltName={alt}",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key
