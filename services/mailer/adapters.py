"""SMTP: a small pool of reused aiosmtplib connections to the configured relay."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from dataclasses import dataclass, field, replace
from urllib.parse import unquote, urlsplit

import ssl

import aiosmtplib
import httpx

from contracts.views import ConnectionCheck
from sequences.mailboxes import ConnectedMailbox, tls_context
from sequences.oauth import OAuthFailure
from services.mailer.domain import Message

log = logging.getLogger(__name__)

_SECURITY = {"smtp": "none", "smtp+starttls": "starttls", "smtps": "tls"}

_TLS_CONTEXT = tls_context()


@dataclass(frozen=True)
class SmtpSettings:
    """From `SMTP_URL`: smtp://host:port (plain), smtp+starttls://user:pass@host:587,
    smtps://user:pass@host:465 (implicit TLS)."""

    host: str
    port: int
    security: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never logged
    # an OAuth2 access token: AUTH XOAUTH2 instead of a password
    oauth_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str) -> SmtpSettings:
        parts = urlsplit(url)
        if parts.scheme not in _SECURITY:
            raise ValueError(f"SMTP_URL scheme must be one of {sorted(_SECURITY)}")
        security = _SECURITY[parts.scheme]
        default_port = {"none": 25, "starttls": 587, "tls": 465}[security]
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or default_port,
            security=security,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


def smtp_settings_of(mailbox: ConnectedMailbox, oauth_token: str | None = None) -> SmtpSettings:
    """How to reach a connected mailbox's SMTP server, with its password when it has one, or
    (OAuth2) with the access token given."""
    smtp = mailbox.smtp
    if mailbox.auth == "oauth2":
        return SmtpSettings(host=smtp["host"], port=smtp["port"], security=smtp["security"],
                            username=mailbox.smtp_username, oauth_token=oauth_token)
    password = mailbox.secrets.get("smtp_password")
    return SmtpSettings(host=smtp["host"], port=smtp["port"], security=smtp["security"],
                        username=mailbox.smtp_username if password else None, password=password)


def describe_failure(error: BaseException) -> str:
    """The exact words of a failed SMTP conversation: the server's code and text, or the TLS
    or network layer's reason (a certificate for another host, a refused connection)."""
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return f"{error.code} {error.message}"
    if isinstance(error, OAuthFailure):
        return str(error)
    # (the TLS error itself after STARTTLS; the cause of a connect error with implicit TLS)
    cause = error if isinstance(error, ssl.SSLError) else error.__cause__ or error.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"TLS: {cause.verify_message or cause.reason}"
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused: nothing answers at that host and port"
    if isinstance(cause, socket.gaierror):
        return f"unknown host: {cause.strerror}"
    if isinstance(cause, ssl.SSLError):
        return f"TLS: {cause.reason or cause}"
    return str(error) or type(error).__name__


def is_mailbox_failure(error: BaseException) -> bool:
    """A refusal of the mailbox rather than of a recipient or the network: a rejected login,
    an AUTH or STARTTLS the server does not offer, a certificate for another host. Sending
    again gets the same answer until someone fixes the mailbox."""
    if isinstance(error, (aiosmtplib.SMTPAuthenticationError, OAuthFailure)):
        return True  # (OAuthFailure: no access token: a revoked consent, a broken endpoint)
    if type(error) in (aiosmtplib.SMTPException, aiosmtplib.SMTPNotSupported):
        return True  # what the client refuses itself: no AUTH, no STARTTLS on the server
    return any(isinstance(e, ssl.SSLCertVerificationError)
               for e in (error, error.__cause__ or error.__context__))


async def check_smtp(settings: SmtpSettings, timeout: float = 15.0) -> ConnectionCheck:
    """Connect, secure and log in as a send would (nothing is sent)."""
    sender = SmtpSender(settings, pool_size=1, timeout=timeout)
    try:
        client = await sender._connect()
    except (aiosmtplib.SMTPException, OSError, ssl.SSLError, asyncio.TimeoutError) as error:
        return ConnectionCheck(ok=False, error=describe_failure(error))
    detail = ("logged in with XOAUTH2" if settings.oauth_token
              else "logged in" if settings.username else "connected (no AUTH)")
    await _close(client)
    return ConnectionCheck(ok=True, detail=f"{detail} at {settings.host}:{settings.port}")


class SmtpSender:
    def __init__(self, settings: SmtpSettings, pool_size: int = 8, timeout: float = 30.0):
        self._settings = settings
        self._timeout = timeout
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        self._slots = asyncio.Semaphore(pool_size)

    async def send(self, message: Message) -> None:
        """Hand the message to the relay; raises on refusal. A connection the server closed in
        the meantime is replaced once before giving up."""
        async with self._slots:
            client = await self._connection()
            try:
                try:
                    await client.sendmail(message.sender, [message.recipient], message.payload)
                except aiosmtplib.SMTPServerDisconnected:
                    client = await self._connect()
                    await client.sendmail(message.sender, [message.recipient], message.payload)
            except BaseException:
                await _close(client)
                raise
            self._idle.put_nowait(client)

    async def _connection(self) -> aiosmtplib.SMTP:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            if client.is_connected:
                return client
        return await self._connect()

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self._settings
        client = aiosmtplib.SMTP(
            hostname=s.host,
            tls_context=_TLS_CONTEXT,
            port=s.port,
            username=s.username,
            password=s.password,
            oauth_token_generator=_token_of(s.oauth_token) if s.oauth_token else None,
            use_tls=s.security == "tls",
            start_tls=True if s.security == "starttls" else (False if s.security == "none" else None),
            timeout=self._timeout,
        )
        await client.connect()
        return client

    async def close(self) -> None:
        while not self._idle.empty():
            await _close(self._idle.get_nowait())


def _token_of(token: str):
    async def generate() -> str:  # aiosmtplib asks for the token when it logs in
        return token
    return generate


async def _close(client: aiosmtplib.SMTP) -> None:
    try:
        await client.quit()
    except Exception:
        client.close()


@dataclass(frozen=True)
class Mailbox:
    """A sender mailbox: how to reach its SMTP server and how much it may send."""

    address: str
    smtp: SmtpSettings
    daily_cap: int | None = None  # emails per day (in the sequence's timezone), after warm-up
    min_gap_seconds: float = 0.0  # between two sends
    hourly_cap: int | None = None
    jitter_seconds: float = 0.0  # a random extra on each gap
    display_name: str = ""
    connected: ConnectedMailbox | None = None  # a workspace's mailbox (else from MAILBOXES)

    @property
    def limited(self) -> bool:
        return (self.daily_cap is not None or self.hourly_cap is not None
                or self.min_gap_seconds > 0 or self.jitter_seconds > 0)


class Mailboxes:
    """Sender mailboxes from `MAILBOXES` (JSON list of {"address", "smtp_url", "daily_cap",
    "min_gap_seconds"}); any other sender goes through the default relay (`SMTP_URL`)."""

    def __init__(self, default_smtp_url: str, mailboxes_json: str | None = None):
        self._default = SmtpSettings.from_url(default_smtp_url)
        self._by_address: dict[str, Mailbox] = {}
        for item in json.loads(mailboxes_json or "[]"):
            smtp = SmtpSettings.from_url(item.get("smtp_url") or default_smtp_url)
            mailbox = Mailbox(item["address"].lower(), smtp, item.get("daily_cap"),
                              float(item.get("min_gap_seconds", 0)))
            self._by_address[mailbox.address] = mailbox
        self._senders: dict[SmtpSettings, tuple[str | None, SmtpSender]] = {}

    def for_address(self, address: str) -> Mailbox:
        return self._by_address.get(address.lower()) or Mailbox(address.lower(), self._default)

    def sender(self, mailbox: Mailbox) -> SmtpSender:
        """One connection pool per SMTP server and login, shared by the mailboxes that use it
        (an OAuth2 mailbox's pool is replaced when its access token changes: the open
        connections are logged in with the old one)."""
        key = replace(mailbox.smtp, oauth_token=None)
        token, sender = self._senders.get(key, (None, None))
        if sender is None or token != mailbox.smtp.oauth_token:
            if sender is not None:
                asyncio.get_running_loop().create_task(sender.close())
            sender = SmtpSender(mailbox.smtp)
            self._senders[key] = (mailbox.smtp.oauth_token, sender)
        return sender


class CaptureVerifier:
    """Asks the local capture server whether a message arrived (`SMTP_VERIFY_URL`): after a
    crash between the SMTP server's acceptance and our record of it, this says whether to send
    again. Without a verifier the mailer sends again (at least once)."""

    def __init__(self, base_url: str):
        self._base_url = base_url.rstrip("/")
        # one client for the process: a client each check built an SSL context each (certifi's
        # CA bundle parsed by OpenSSL), and the checks after a restart took the mailer from
        # 108 to 270-300 MB of native memory in the fault run (issue 18)
        self._client = httpx.AsyncClient(timeout=5)

    async def was_delivered(self, message_id: str) -> bool | None:
        try:
            response = await self._client.get(f"{self._base_url}/messages",
                                              params={"message_id": message_id})
            response.raise_for_status()
        except httpx.HTTPError as error:
            log.warning("cannot verify delivery of %s: %s", message_id, error)
            return None
        return bool(response.json())
