"""Local SMTP capture server: accepts every message and keeps it as a file, plus a web viewer.

Each message becomes ``<id>.eml`` in the mail directory, holding the DATA bytes exactly as
received, next to ``<id>.json`` with the SMTP envelope. ``<id>`` is a 20-digit nanosecond
receive timestamp and a random suffix, so file names sort in arrival order. The sidecar is
written first and the message is renamed into place, so anyone who sees an ``.eml`` can read it
whole and find its envelope.

Recipients whose address starts with ``bounce`` are refused (550 5.1.1, a hard bounce), those
starting with ``dmarc`` get 550 5.7.26 (a sender-side refusal: the address is not blamed), and
those starting with ``tempfail`` get 451 4.7.1 the first two times (``tempfail5...``: five
times) before being accepted, so the mailer's bounce and retry paths can be seen by hand and
tested. A tag in the local part picks a permanent refusal of another kind: ``+dmarc``
(``kim+dmarc@…``, ``kim+dmarc.7f3a@…``) gets ``550 5.7.26`` (the sender failed DMARC: a sender-side rejection),
``+spam`` gets ``550 5.7.1`` (rejected as spam: content-side) and ``+unknown`` gets
``550 5.1.1`` (user unknown, as ``bounce…``). ``GET /messages?message_id=<id>`` tells whether a message was received: the mailer asks
it after a crash to learn whether a send it did not get to record went through.

Run it with ``python -m sequences.devstack.capture --mail-dir DIR``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import html
import json
import logging
import os
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import uvicorn
from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

log = logging.getLogger(__name__)

# Messages up to 30 MB must get through; the limit counts SMTP line endings, so add headroom.
DATA_SIZE_LIMIT = 32 * 1024 * 1024

_CAPTURE_ID = re.compile(r"\d{20}-[0-9a-f]{32}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# permanent refusals picked by a tag in the recipient's local part (see the module's doc)
_TAGGED_REFUSALS = {
    "dmarc": "550 5.7.26 This message does not pass authentication checks (SPF and DKIM both"
             " do not pass). DMARC policy of the sending domain is reject",
    "spam": "550 5.7.1 Message rejected as spam by Content Filtering",
}


@dataclass(frozen=True)
class CapturedMessage:
    """What the viewer shows about one message; ``id`` is the file name without extension."""

    id: str
    received_at: datetime
    mail_from: str
    rcpt_to: list[str]
    subject: str | None
    message_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "received_at": self.received_at.isoformat(),
            "mail_from": self.mail_from,
            "rcpt_to": self.rcpt_to,
            "subject": self.subject,
            "message_id": self.message_id,
        }


def read_captured(mail_dir: Path) -> list[EmailMessage]:
    """Parse every captured message, oldest first."""
    return [_parsed(path) for path in sorted(Path(mail_dir).glob("*.eml"))]


@functools.lru_cache(maxsize=4096)
def _parsed(path: Path) -> EmailMessage:
    """One message, parsed once: an .eml never changes once it has its name (it is renamed
    into place whole), and tests poll the captured mail many times over while a stack they
    share for a whole run holds a thousand messages (about 1 ms each to parse)."""
    with path.open("rb") as f:
        return BytesParser(_class=EmailMessage, policy=policy.default).parse(f)


class _StoreHandler:
    """aiosmtpd handler. Kept separate from MailCapture because aiosmtpd introspects the
    handler's attributes on every connection, so a small class keeps that cheap."""

    def __init__(self, mail_dir: Path) -> None:
        self.mail_dir = mail_dir
        self.refusals: dict[str, int] = {}  # address -> temporary failures given so far

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        local = address.split("@", 1)[0].lower()
        tag = re.match(r"[a-z]*", local.partition("+")[2])[0]  # "+dmarc.7f3a" -> "dmarc"
        if local.startswith("dmarc"):  # dmarc@…: the same as a +dmarc tag
            tag = "dmarc"
        if local.startswith("bounce") or tag == "unknown":
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if tag in _TAGGED_REFUSALS:
            return _TAGGED_REFUSALS[tag]
        if local.startswith("tempfail"):
            times = int(match[1]) if (match := re.match(r"tempfail(\d+)", local)) else 2
            if self.refusals.get(address, 0) < times:
                self.refusals[address] = self.refusals.get(address, 0) + 1
                return "451 4.7.1 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert envelope.original_content is not None
        capture_id = f"{time.time_ns():020d}-{uuid.uuid4().hex}"
        sidecar = {"mail_from": envelope.mail_from, "rcpt_to": envelope.rcpt_tos}
        # Written in the event loop without fsync: small writes are far cheaper than a thread
        # hop, and losing mail on a machine crash is fine for a capture server. File creation
        # dominates the cost per message, so the sidecar gets no rename of its own: readers
        # find messages by their .eml, which appears only once the sidecar is complete.
        sidecar_path = self.mail_dir / f"{capture_id}.json"
        sidecar_path.write_bytes(json.dumps(sidecar, ensure_ascii=False).encode())
        # A temporary name ending in .tmp, so no glob for *.eml matches a half-written file.
        temporary = self.mail_dir / f".{capture_id}.eml.tmp"
        temporary.write_bytes(envelope.original_content)
        os.replace(temporary, self.mail_dir / f"{capture_id}.eml")
        return "250 OK"


class _EmbeddedUvicorn(uvicorn.Server):
    """A uvicorn server that leaves SIGINT/SIGTERM alone.

    uvicorn normally installs its own handlers and re-raises the signal after shutting down;
    here whoever runs the event loop decides when to stop, and stops us by ``should_exit``.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class MailCapture:
    """The SMTP capture server and, if ``http_port`` is given, its viewer, on the running loop."""

    def __init__(
        self,
        mail_dir: Path,
        *,
        host: str = "127.0.0.1",
        smtp_port: int,
        http_port: int | None = None,
    ) -> None:
        self.mail_dir = Path(mail_dir)
        self.host = host
        self.smtp_port = smtp_port
        self.http_port = http_port
        self._smtp: asyncio.Server | None = None
        self._http: _EmbeddedUvicorn | None = None
        self._http_task: asyncio.Task[None] | None = None
        # Captured files never change, so each is read once; rebuilt from the directory
        # listing on every request, so deleted files drop out.
        self._summaries: dict[str, CapturedMessage] = {}
        # Requests run in a thread pool: one at a time reads the new files, the others then
        # find them read (else, after a mailer crash, each of its concurrent delivery checks
        # read every file captured so far, and all of them timed out together).
        self._summarizing = threading.Lock()

    @property
    def viewer_url(self) -> str | None:
        return None if self.http_port is None else f"http://{self.host}:{self.http_port}/"

    async def start(self) -> None:
        if self._smtp is not None:
            raise RuntimeError("MailCapture is already running")
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        try:
            await self._start_smtp()
            if self.http_port is not None:
                self._start_http(self.http_port)
        except BaseException:
            await self.stop()
            raise

    async def _start_smtp(self) -> None:
        loop = asyncio.get_running_loop()
        handler = _StoreHandler(self.mail_dir)
        # An explicit hostname: otherwise aiosmtpd calls socket.getfqdn() for every
        # connection, a DNS lookup that can take seconds.
        hostname = socket.gethostname()
        self._smtp = await loop.create_server(
            lambda: SMTP(
                handler,
                hostname=hostname,
                data_size_limit=DATA_SIZE_LIMIT,
                enable_SMTPUTF8=True,
                loop=loop,
            ),
            self.host,
            self.smtp_port,
        )

    def _start_http(self, port: int) -> None:
        # Binding here rather than in uvicorn makes a taken port fail in start() (uvicorn
        # would call sys.exit inside its task), and connections are accepted from now on.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, port), family=family)
        config = uvicorn.Config(
            _viewer_app(self),
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
        )
        self._http = _EmbeddedUvicorn(config)
        self._http_task = asyncio.create_task(self._http.serve(sockets=[sock]))

    async def stop(self) -> None:
        http, http_task, smtp = self._http, self._http_task, self._smtp
        self._http = self._http_task = self._smtp = None
        try:
            if http is not None and http_task is not None:
                http.should_exit = True
                await http_task
        finally:
            if smtp is not None:
                smtp.close()
                await smtp.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def messages(self) -> list[CapturedMessage]:
        """Summaries of the captured messages, newest first."""
        with self._summarizing:
            ids = sorted((path.stem for path in self.mail_dir.glob("*.eml")), reverse=True)
            known = self._summaries
            self._summaries = {i: known.get(i) or _summarize(self.mail_dir, i) for i in ids}
            return list(self._summaries.values())


def _summarize(mail_dir: Path, capture_id: str) -> CapturedMessage:
    envelope = json.loads((mail_dir / f"{capture_id}.json").read_bytes())
    headers = BytesHeaderParser(policy=policy.default).parsebytes(
        _read_header_block(mail_dir / f"{capture_id}.eml")
    )
    subject = headers.get("subject")
    # The raw value, unfolded: the structured Message-ID parser raises on malformed ids in
    # Python 3.11, and a capture server exists to show malformed mail too.
    raw_message_id = next((v for k, v in headers.raw_items() if k.lower() == "message-id"), None)
    return CapturedMessage(
        id=capture_id,
        received_at=_EPOCH + timedelta(microseconds=int(capture_id[:20]) // 1000),
        mail_from=envelope["mail_from"],
        rcpt_to=envelope["rcpt_to"],
        # policy.default decodes RFC 2047 encoded words (e.g. Korean UTF-8 subjects).
        subject=None if subject is None else str(subject),
        message_id=None if raw_message_id is None else " ".join(raw_message_id.split()),
    )


def _read_header_block(path: Path) -> bytes:
    # Stop at the blank line: a 30 MB attachment need not be read to list its subject.
    head = bytearray()
    with path.open("rb") as f:
        for line in f:
            if line in (b"\r\n", b"\n"):
                break
            head += line
    return bytes(head)


def _viewer_app(capture: MailCapture) -> FastAPI:
    app = FastAPI(title="Sequences mail capture", docs_url=None, redoc_url=None)

    # Plain (not async) handlers: FastAPI runs them in its thread pool, so reading many
    # files does not stall the SMTP server sharing the event loop.
    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/messages")
    def list_messages(message_id: str | None = None) -> list[dict[str, Any]]:
        messages = capture.messages()
        if message_id is not None:
            messages = [m for m in messages if m.message_id == message_id]
        return [message.to_json() for message in messages]

    @app.get("/messages/{capture_id}")
    def raw_message(capture_id: str) -> FileResponse:
        # The pattern check also keeps the id from naming a path outside the mail directory.
        path = capture.mail_dir / f"{capture_id}.eml"
        if not _CAPTURE_ID.fullmatch(capture_id) or not path.is_file():
            raise HTTPException(status_code=404, detail="no such message")
        return FileResponse(path, media_type="message/rfc822", filename=f"{capture_id}.eml")

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return _render_index(capture.messages())

    return app


def _render_index(messages: list[CapturedMessage]) -> str:
    rows = "\n".join(
        "<tr>"
        f"<td>{m.received_at:%Y-%m-%d %H:%M:%S}</td>"
        f"<td>{html.escape(m.mail_from)}</td>"
        f"<td>{html.escape(', '.join(m.rcpt_to))}</td>"
        f"<td>{html.escape(m.subject or '(no subject)')}</td>"
        f'<td><a href="/messages/{m.id}">raw</a></td>'
        "</tr>"
        for m in messages
    )
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>Captured mail</title>'
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}</style>"
        f"</head><body><h1>Captured mail ({len(messages)})</h1>\n"
        "<table><tr><th>Received (UTC)</th><th>From</th><th>To</th><th>Subject</th><th></th></tr>\n"
        f"{rows}\n</table></body></html>\n"
    )


async def serve(
    mail_dir: Path,
    host: str = "127.0.0.1",
    smtp_port: int = 1025,
    http_port: int | None = 8025,
) -> None:
    """Capture mail (and serve the viewer) until cancelled."""
    capture = MailCapture(mail_dir, host=host, smtp_port=smtp_port, http_port=http_port)
    async with capture:
        log.info(
            "capturing mail on smtp://%s:%d into %s; viewer at %s",
            host,
            smtp_port,
            capture.mail_dir,
            capture.viewer_url or "(disabled)",
        )
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mail-dir", type=Path, required=True, help="where messages are stored")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--smtp-port", type=int, default=1025)
    parser.add_argument("--http-port", type=int, default=8025, help="viewer port")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # aiosmtpd logs several INFO lines per message: at benchmark rates, a flood that costs time.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    asyncio.run(_serve_until_signalled(args.mail_dir, args.host, args.smtp_port, args.http_port))


async def _serve_until_signalled(mail_dir: Path, host: str, smtp_port: int, http_port: int) -> None:
    # SIGTERM and SIGINT cancel serve(), whose cleanup closes both servers in order.
    task = asyncio.create_task(serve(mail_dir, host, smtp_port, http_port))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    log.info("mail capture stopped")


if __name__ == "__main__":
    main()
