"""The workspace's connected mailboxes (`sequences.mailboxes`), as the watcher reads them: each
one read over IMAP becomes a MailboxConfig like those of WATCH_MAILBOXES, and "test
connection" logs in to it once."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.commands import TestMailboxImap
from contracts.views import ConnectionCheck
from sequences import mailboxes
from sequences.encryption import SecretBox
from sequences.mailboxes import ConnectedMailbox
from sequences.oauth import AccessTokens
from sequences.messaging.rpc import Rejected
from services.thread_watcher.config import MailboxConfig
from services.thread_watcher.imap import ImapSession
from services.thread_watcher.mailbox import MailboxError


def config_of(mailbox: ConnectedMailbox, tokens: AccessTokens | None = None
              ) -> MailboxConfig | None:
    """How to read the mailbox, or None when it is not read over IMAP (or has no login yet:
    no password, or an OAuth2 mailbox without consent)."""
    imap = mailbox.imap
    password = mailbox.secrets.get("imap_password")
    oauth = mailbox.auth == "oauth2" and tokens is not None
    if imap is None or not (password or oauth and mailbox.secrets.get("refresh_token")):
        return None

    async def token(refused: str | None = None) -> str:
        return await tokens.token(mailbox, refused)

    return MailboxConfig(
        scheme="imaps" if imap["security"] == "tls" else "imap", host=imap["host"],
        port=imap["port"], user=mailbox.imap_username, password=password or "",
        folders=tuple(imap["folders"]), idle=imap["idle"], address=mailbox.address,
        starttls=imap["security"] == "starttls", oauth_token=token if oauth else None)


async def watched(engine: AsyncEngine, box: SecretBox,
                  tokens: AccessTokens | None = None) -> list[MailboxConfig]:
    """Every connected mailbox that can be read, of every workspace."""
    async with engine.connect() as conn:
        found = await mailboxes.load(conn, box, "imap IS NOT NULL")
    return [config for m in found if (config := config_of(m, tokens)) is not None]


class ImapTests:
    def __init__(self, engine: AsyncEngine, box: SecretBox, tokens: AccessTokens | None = None):
        self._engine = engine
        self._box = box
        self._tokens = tokens or AccessTokens(engine, box)

    async def test(self, command: TestMailboxImap) -> ConnectionCheck:
        """Log in and open every folder, now; the mailbox's health says what was found."""
        async with self._engine.connect() as conn:
            found = await mailboxes.load(conn, self._box, "mailbox_id = :id AND workspace_id"
                                         " = :ws", {"id": command.mailbox_id,
                                                    "ws": command.workspace_id})
        if not found:
            raise Rejected(404, f"no such mailbox: {command.mailbox_id}", "mailbox_id")
        mailbox = found[0]
        config = config_of(mailbox, self._tokens)
        check = (ConnectionCheck(ok=False, error="no IMAP server or password (or OAuth2"
                                                 " consent) is set")
                 if config is None else await _log_in(config))
        # (not the mailbox's sending health: a mailbox that cannot be read can still send; the
        # watcher's own health of it says so)
        if not check.ok:
            check = check.model_copy(update={"error": mailbox.redact(check.error or "")})
        return check


async def _log_in(config: MailboxConfig) -> ConnectionCheck:
    session = ImapSession(config, timeout=15)
    try:
        await session.open()
        for folder in config.folders:
            await session.select(folder)
        idle = "IDLE" if session.supports_idle else "no IDLE: polling"
    except MailboxError as error:
        return ConnectionCheck(ok=False, error=str(error))
    finally:
        await session.close()
    return ConnectionCheck(ok=True, detail=f"logged in with {session.mechanism};"
                                           f" {', '.join(config.folders)} opened; {idle}")
