"""SMTP: a small pool of reused aiosmtplib connections to the configured relay."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import aiosmtplib
import httpx

from services.mailer.domain import Message

log = logging.getLogger(__name__)

_SECURITY = {"smtp": "none", "smtp+starttls": "starttls", "smtps": "tls"}


@dataclass(frozen=True)
class SmtpSettings:
    """From `SMTP_URL`: smtp://host:port (plain), smtp+starttls://user:pass@host:587,
    smtps://user:pass@host:465 (implicit TLS)."""

    host: str
    port: int
    security: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never logged

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
            port=s.port,
            username=s.username,
            password=s.password,
            use_tls=s.security == "tls",
            start_tls=True if s.security == "starttls" else (False if s.security == "none" else None),
            timeout=self._timeout,
        )
        await client.connect()
        return client

    async def close(self) -> None:
        while not self._idle.empty():
            await _close(self._idle.get_nowait())


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
    daily_cap: int | None = None  # emails per day (in the sequence's timezone)
    min_gap_seconds: float = 0.0  # between two sends

    @property
    def limited(self) -> bool:
        return self.daily_cap is not None or self.min_gap_seconds > 0


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
        self._senders: dict[SmtpSettings, SmtpSender] = {}

    def for_address(self, address: str) -> Mailbox:
        return self._by_address.get(address.lower()) or Mailbox(address.lower(), self._default)

    def sender(self, mailbox: Mailbox) -> SmtpSender:
        """One connection pool per SMTP server, shared by the mailboxes that use it."""
        if mailbox.smtp not in self._senders:
            self._senders[mailbox.smtp] = SmtpSender(mailbox.smtp)
        return self._senders[mailbox.smtp]


class CaptureVerifier:
    """Asks the local capture server whether a message arrived (`SMTP_VERIFY_URL`): after a
    crash between the SMTP server's acceptance and our record of it, this says whether to send
    again. Without a verifier the mailer sends again (at least once)."""

    def __init__(self, base_url: str):
        self._base_url = base_url.rstrip("/")

    async def was_delivered(self, message_id: str) -> bool | None:
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                response = await client.get(f"{self._base_url}/messages",
                                            params={"message_id": message_id})
                response.raise_for_status()
        except httpx.HTTPError as error:
            log.warning("cannot verify delivery of %s: %s", message_id, error)
            return None
        return bool(response.json())
