"""Which mailboxes the thread-watcher reads, from the environment.

    WATCH_MAILBOXES      mailbox URLs, separated by whitespace or commas:
                           imaps://USER:PASSWORD@HOST[:993][?folders=INBOX,Bounces&idle=1]
                           imap://USER:PASSWORD@HOST[:143][?...]   (no TLS: loopback and tests)
                           maildir:///PATH                          (the dev stack's mailbox)
                         USER and PASSWORD are percent-encoded (user%40example.com).
                         `address=` names the sender address whose mail it receives (default:
                         USER when it is an address); a mailbox without one is a catch-all
                         (the dev Maildir, a shared inbox). A workspace's mailbox health shows
                         the mailboxes of its sequences' sender addresses, and the catch-alls.
    WATCH_POLL_SECONDS   how often every folder is scanned, IDLE or not (default 30)
    WATCH_LOOKBACK_DAYS  how far back a folder is read the first time, or after its
                         UIDVALIDITY changed (default 14)
    WATCH_REFRESH_SECONDS  how often the workspaces' connected mailboxes are looked up again
                         (default 30: a newly connected mailbox is read within it)
    WATCH_LEASE_SECONDS  a replica whose heartbeat is older than this has its mailboxes taken
                         over by the others (default 10)

A mailbox is named in logs, health and the database by its URL without the password.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from sequences.config import ConfigError

_SCHEMES = {"imap": 143, "imaps": 993, "maildir": None}
# a new mailbox starts wherever a scheme follows a comma or whitespace (folder lists use commas)
_SPLIT = re.compile(r"[\s,]+(?=(?:imaps?|maildir):)")
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class MailboxConfig:
    scheme: str
    host: str = ""
    port: int = 0
    user: str = ""
    password: str = field(default="", repr=False)
    path: Path | None = None
    folders: tuple[str, ...] = ("INBOX",)
    idle: bool = True  # use IDLE when the server offers it
    address: str = ""  # the sender address it receives for ("": a catch-all)
    starttls: bool = False  # imap:// upgraded with STARTTLS (a connected mailbox's setting)
    # OAuth2 (a connected mailbox): gives a current access token at each login, for AUTH
    # XOAUTH2 or OAUTHBEARER; not part of what makes two configurations the same
    oauth_token: Callable[[], Awaitable[str]] | None = field(default=None, repr=False,
                                                              compare=False)

    @property
    def name(self) -> str:
        """The mailbox without its password: safe for logs, health and storage."""
        if self.scheme == "maildir":
            return f"maildir://{self.path}"
        user = f"{self.user}@" if self.user else ""
        return f"{self.scheme}://{user}{self.host}:{self.port}"

    @property
    def tls(self) -> bool:
        return self.scheme == "imaps"

    @property
    def secured(self) -> bool:
        return self.tls or self.starttls

    def redact(self, text: str) -> str:
        """`text` with the password blanked, for error messages that might echo it (as typed,
        or escaped as in an IMAP LOGIN command)."""
        if not self.password:
            return text
        escaped = self.password.replace("\\", "\\\\").replace('"', '\\"')
        return text.replace(escaped, "***").replace(self.password, "***")


@dataclass(frozen=True)
class WatcherSettings:
    mailboxes: tuple[MailboxConfig, ...]
    poll_seconds: float = 30.0
    lookback_days: int = 14
    refresh_seconds: float = 30.0  # how often the connected mailboxes are looked up again
    lease_seconds: float = 10.0  # a replica silent this long has its share taken by the others

    @classmethod
    def from_env(cls) -> WatcherSettings:
        try:
            settings = cls(
                mailboxes=parse_mailboxes(os.environ.get("WATCH_MAILBOXES", "")),
                poll_seconds=float(os.environ.get("WATCH_POLL_SECONDS", "30")),
                lookback_days=int(os.environ.get("WATCH_LOOKBACK_DAYS", "14")),
                refresh_seconds=float(os.environ.get("WATCH_REFRESH_SECONDS", "30")),
                lease_seconds=float(os.environ.get("WATCH_LEASE_SECONDS", "10")),
            )
        except ValueError as error:
            raise ConfigError(f"thread-watcher settings: {error}") from None
        if (settings.poll_seconds <= 0 or settings.lookback_days < 0
                or settings.refresh_seconds <= 0 or settings.lease_seconds <= 0):
            raise ConfigError("WATCH_POLL_SECONDS, WATCH_REFRESH_SECONDS and WATCH_LEASE_SECONDS"
                              " must be positive, WATCH_LOOKBACK_DAYS not negative")
        return settings


def parse_mailboxes(value: str) -> tuple[MailboxConfig, ...]:
    mailboxes = tuple(parse_mailbox(url) for url in _SPLIT.split(value.strip()) if url)
    names = [m.name for m in mailboxes]
    if twice := {name for name in names if names.count(name) > 1}:
        raise ValueError(f"WATCH_MAILBOXES lists {', '.join(sorted(twice))} more than once")
    return mailboxes


def parse_mailbox(url: str) -> MailboxConfig:
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"WATCH_MAILBOXES: unknown scheme {parts.scheme!r} "
                         "(imap, imaps or maildir)")
    query = parse_qs(parts.query)
    folders = tuple(f.strip() for f in ",".join(query.get("folders", ["INBOX"])).split(",")
                    if f.strip()) or ("INBOX",)
    idle = query.get("idle", ["1"])[-1].lower() not in _FALSE
    address = query.get("address", [""])[-1].strip().lower()
    if parts.scheme == "maildir":
        return MailboxConfig("maildir", path=Path(unquote(parts.netloc + parts.path)),
                             folders=folders, idle=False, address=address)
    if not parts.hostname or not parts.username:
        raise ValueError(f"WATCH_MAILBOXES: {parts.scheme} URL needs a user and a host")
    return MailboxConfig(
        scheme=parts.scheme, host=parts.hostname, port=parts.port or _SCHEMES[parts.scheme],
        user=unquote(parts.username), password=unquote(parts.password or ""),
        folders=folders, idle=idle,
        address=address or (unquote(parts.username).lower() if "@" in parts.username
                            or "%40" in parts.username else ""),
    )
