"""IMAP access (aioimaplib): one logged-in connection, reading the messages of a folder that
came after a position, and waiting for new ones with IDLE.

Messages are read with BODY.PEEK, so the rep's mailbox keeps its unread marks, and only their
first MiB is fetched (see mail.READ_LIMIT). Every failure of the server or the network surfaces
as MailboxError, whose text never carries the password.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import ssl
from collections.abc import AsyncIterator
from datetime import datetime
from time import perf_counter

import aioimaplib

from sequences import metrics
from sequences.mailboxes import tls_context
from sequences.oauth import OAuthFailure
from services.thread_watcher.config import MailboxConfig
from services.thread_watcher.mail import READ_LIMIT
from services.thread_watcher.mailbox import (
    Fetched,
    FolderUnavailable,
    MailboxError,
    Position,
    Unread,
)

# aioimaplib logs every line it sends and receives at DEBUG: message contents and, with some
# servers, credentials. Nothing of it belongs in this service's logs.
logging.getLogger("aioimaplib").setLevel(logging.WARNING)

_TIMEOUT = 30.0
_FETCH_BATCH = 10  # UIDs per FETCH: at most ~10 MiB in memory at once
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_UID = re.compile(rb"UID (\d+)")
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]")


class ImapSession:
    """One logged-in IMAP connection (TLS for imaps://)."""

    def __init__(self, config: MailboxConfig, timeout: float = _TIMEOUT):
        self.config = config
        self._timeout = timeout
        self._client: aioimaplib.IMAP4 | None = None
        self._lost = asyncio.Event()
        self.mechanism = "LOGIN"  # how it logged in: LOGIN, XOAUTH2 or OAUTHBEARER

    @property
    def supports_idle(self) -> bool:
        return self._client is not None and self._client.has_capability("IDLE")

    async def open(self) -> None:
        config = self.config
        with self._errors("connect"):
            if config.tls:
                client = aioimaplib.IMAP4_SSL(config.host, config.port, timeout=self._timeout,
                                              ssl_context=tls_context())
            else:
                client = aioimaplib.IMAP4(config.host, config.port, timeout=self._timeout)
            self._client = client
            # IMAP4_SSL takes no callback; a lost connection must end an IDLE wait at once
            client.protocol.conn_lost_cb = lambda _exc: self._lost.set()
            await client.wait_hello_from_server()
        if config.starttls:
            await self._start_tls(client)
        if config.oauth_token is not None:  # each AUTHENTICATE is timed as a login
            self._refused_unless_ok(await self._oauth_login(client))
        else:
            with self._errors("login"):
                self._refused_unless_ok(await client.login(config.user, config.password))

    async def _start_tls(self, client: aioimaplib.IMAP4) -> None:
        """RFC 3501 STARTTLS: the command in the clear, then TLS on the same connection, then
        the capabilities again (a server may offer more AUTH mechanisms once secured).
        aioimaplib 2.0.3 knows the command but not the upgrade, done here on its transport."""
        if not client.has_capability("STARTTLS"):
            raise MailboxError("STARTTLS: the server does not offer it (use TLS, port 993?)")
        protocol = client.protocol
        with self._errors("STARTTLS"):
            response = await protocol.execute(aioimaplib.Command(
                "STARTTLS", protocol.new_tag(), loop=protocol.loop))
            if response.result != "OK":
                raise MailboxError(f"STARTTLS refused: {self._text(response)}")
            try:
                protocol.transport = await protocol.loop.start_tls(
                    protocol.transport, protocol, tls_context(), server_hostname=self.config.host)
            except ssl.SSLCertVerificationError as error:
                raise MailboxError(f"TLS: {error.verify_message or error.reason}") from None
            except ssl.SSLError as error:
                raise MailboxError(f"TLS: {error.reason or error}") from None
            await protocol.capability()

    async def _oauth_login(self, client: aioimaplib.IMAP4):
        """AUTHENTICATE with a current access token; a token the server refuses is refreshed
        and tried once more (it expired early; a revoked consent fails the refresh)."""
        token = await self._token()
        response = await self._authenticate(client, token)
        if response.result != "OK":
            response = await self._authenticate(client, await self._token(refused=token))
        return response

    async def _token(self, refused: str | None = None) -> str:
        try:
            return await self.config.oauth_token(refused)
        except OAuthFailure as failure:
            raise MailboxError(str(failure)) from None

    async def _authenticate(self, client: aioimaplib.IMAP4, token: str):
        """XOAUTH2 (Google, Microsoft), else OAUTHBEARER (RFC 7628), whichever is offered."""
        user, host, port = self.config.user, self.config.host, self.config.port
        if client.has_capability("AUTH=XOAUTH2"):
            mechanism, initial = "XOAUTH2", f"user={user}\x01auth=Bearer {token}\x01\x01"
        elif client.has_capability("AUTH=OAUTHBEARER"):
            mechanism = "OAUTHBEARER"
            initial = f"n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"
        else:
            raise MailboxError("the IMAP server offers neither AUTH=XOAUTH2 nor AUTH=OAUTHBEARER")
        protocol = client.protocol
        _answer_refusal_challenges(protocol)
        try:
            with self._errors("login"):
                response = await asyncio.wait_for(protocol.execute(aioimaplib.Command(
                    "AUTHENTICATE", protocol.new_tag(), mechanism,
                    base64.b64encode(initial.encode()).decode(), loop=protocol.loop),
                    scrub=token), self._timeout)
                if response.result != "OK":
                    raise TokenRefused(response)  # timed as a failed login, like a password's
        except TokenRefused as refused:
            return refused.response
        if response.result == "OK":
            protocol.state = aioimaplib.AUTH
            self.mechanism = mechanism
        return response

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.logout(), 2)
        with contextlib.suppress(Exception):
            client.protocol.transport.close()

    async def unread(self, folder: str, after: Position | None, since: datetime) -> Unread:
        """Messages after `after`; when the folder is new to us or its UIDVALIDITY changed, the
        messages that arrived since `since` (their UIDs mean nothing any more)."""
        uidvalidity, uidnext = await self.select(folder)
        if after is not None and after.uidvalidity == uidvalidity:
            floor = after.last_uid
            # "n:*" always includes the highest UID, even when it is below n
            uids = [u for u in await self._search(f"UID {floor + 1}:*") if u > floor]
        else:
            floor = 0
            uids = await self._search(f"SINCE {since.day}-{_MONTHS[since.month - 1]}-{since.year}")
        last = max(floor, uidnext - 1, *uids)
        return Unread(self._fetch_all(uidvalidity, uids), Position(uidvalidity, last))

    async def acknowledge(self, fetched: Fetched) -> None:
        """Nothing to do: the position recorded with the decision is the acknowledgement."""

    async def wait_for_change(self, timeout: float) -> bool:
        """IDLE until the server reports a change (True) or `timeout` seconds pass (False)."""
        client = self._require()
        with self._errors("IDLE"):
            idle = await client.idle_start(timeout=timeout)
            try:
                push = await self._next_push(timeout + 5)
            finally:
                client.idle_done()
                await asyncio.wait_for(idle, self._timeout)
        return push != aioimaplib.STOP_WAIT_SERVER_PUSH

    async def _next_push(self, timeout: float):
        push = asyncio.ensure_future(self._require().wait_server_push(timeout))
        lost = asyncio.ensure_future(self._lost.wait())
        done, pending = await asyncio.wait({push, lost}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if push not in done:
            raise MailboxError("connection lost")
        return push.result()

    async def select(self, folder: str) -> tuple[int, int]:
        """Open `folder`; returns its UIDVALIDITY and UIDNEXT."""
        with self._errors(f"select {folder}"):
            response = await self._require().select(encode_folder(folder))
            if response.result != "OK":
                raise FolderUnavailable(f"folder {folder!r}: {self._text(response)}")
        uidvalidity = _code(response.lines, _UIDVALIDITY)
        if uidvalidity is None:
            raise MailboxError(f"folder {folder!r}: the server sent no UIDVALIDITY")
        return uidvalidity, _code(response.lines, _UIDNEXT) or 1

    async def _search(self, criteria: str) -> list[int]:
        with self._errors("search"):
            response = await self._require().uid_search(criteria, charset=None)
            if response.result != "OK":
                raise MailboxError(f"search failed: {self._text(response)}")
        # aioimaplib hands over the untagged "SEARCH 4 7" as b"4 7"; the last line is the status
        found = [line.split() for line in response.lines[:-1]]
        return sorted(int(uid) for uids in found if all(u.isdigit() for u in uids) for uid in uids)

    async def _fetch_all(self, uidvalidity: int, uids: list[int]) -> AsyncIterator[Fetched]:
        for start in range(0, len(uids), _FETCH_BATCH):
            batch = uids[start:start + _FETCH_BATCH]
            for uid, raw in await self._fetch(batch):
                yield Fetched(raw, Position(uidvalidity, uid))

    async def _fetch(self, uids: list[int]) -> list[tuple[int, bytes]]:
        # one byte more than is read, so that parsing can tell a message was cut
        parts = f"(UID BODY.PEEK[]<0.{READ_LIMIT + 1}>)"
        with self._errors("fetch"):
            response = await self._require().uid("fetch", ",".join(map(str, uids)), parts)
            if response.result != "OK":
                raise MailboxError(f"fetch failed: {self._text(response)}")
        return sorted(_fetched_messages(response.lines))

    def _require(self) -> aioimaplib.IMAP4:
        if self._client is None:
            raise MailboxError("not connected")
        return self._client

    def _refused_unless_ok(self, response) -> None:
        if response.result != "OK":
            raise MailboxError(f"login rejected: {self._text(response)}")

    @contextlib.contextmanager
    def _errors(self, doing: str):
        """One IMAP operation: its failures as MailboxError, and its duration recorded as
        `sequences.imap.operation.duration` (imap.operation: the command; error.type when it
        failed, a refused answer included)."""
        attributes = {"imap.operation": doing.split()[0].lower()}
        started = perf_counter()
        try:
            yield
        except MailboxError as error:
            _record(started, {**attributes, "error.type": type(error).__name__})
            raise
        except (OSError, asyncio.TimeoutError, aioimaplib.AioImapException) as error:
            _record(started, {**attributes, "error.type": type(error).__name__})
            detail = self.config.redact(str(error) or type(error).__name__)
            raise MailboxError(f"{doing}: {detail}") from None
        _record(started, attributes)

    def _text(self, response) -> str:
        lines = [bytes(line).decode(errors="replace") for line in response.lines]
        return self.config.redact(" ".join(lines)[:300])


def _record(started: float, attributes: dict) -> None:
    metrics.imap_duration.record(perf_counter() - started, attributes)


def _code(lines: list, pattern: re.Pattern) -> int | None:
    for line in lines:
        if isinstance(line, bytes) and (match := pattern.search(line)):
            return int(match.group(1))
    return None


def _fetched_messages(lines: list) -> list[tuple[int, bytes]]:
    """(UID, bytes) from FETCH response lines: `N FETCH (UID u BODY[]<0> {n}`, the literal, then
    `)` (servers may also put the UID after the literal)."""
    found = []
    for index, line in enumerate(lines):
        if isinstance(line, bytearray) and index > 0:
            following = lines[index + 1] if index + 1 < len(lines) else b""
            around = bytes(lines[index - 1]) + b" " + bytes(following)
            uid = _UID.search(around)
            if uid:
                found.append((int(uid.group(1)), bytes(line)))
    return found


def encode_folder(name: str) -> str:
    """A folder name as IMAP wants it: modified UTF-7 (RFC 3501 5.1.3), quoted. "INBOX" stays
    itself; "받은편지함" becomes "&vBvHQNO4ycDVaA-"."""
    out, pending = [], []

    def flush() -> None:
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be")).decode()
            out.append("&" + encoded.rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    quoted = "".join(out).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}"'


def _answer_refusal_challenges(protocol: aioimaplib.IMAP4ClientProtocol) -> None:
    """A server refusing an OAuth token answers AUTHENTICATE with a challenge carrying its error
    (JSON) and waits for the client's reply before its tagged NO (RFC 7628 3.2.3; Google's and
    Microsoft's XOAUTH2 alike). aioimaplib only records the challenge, so the command waited
    until its timeout and the refusal surfaced as a TimeoutError. Reply as the RFC says: %x01
    for OAUTHBEARER, an empty line for XOAUTH2."""
    record = protocol._continuation

    def continuation(line: bytes) -> None:
        command = protocol.pending_sync_command
        if command is None or command.name != "AUTHENTICATE":
            return record(line)
        record(line)
        protocol.transport.write(b"AQ==\r\n" if "OAUTHBEARER" in command.args else b"\r\n")

    protocol._continuation = continuation


class TokenRefused(MailboxError):
    """The server answered an OAuth login NO: recorded as a failed login, and handed back to
    `_oauth_login`, which tries once more with a refreshed token."""

    def __init__(self, response):
        super().__init__("login rejected")
        self.response = response
