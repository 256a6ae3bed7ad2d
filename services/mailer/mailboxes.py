"""The workspace's mailboxes, served to the gateway: connect, change, disconnect, list, show
(with today's sends against the limits), and the SMTP half of "test connection" (the
thread-watcher tests IMAP). Secrets go in sealed (sequences/encryption.py) and never come out."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from contracts.commands import (
    ChangeMailbox,
    ConnectMailbox,
    DisconnectMailbox,
    GetMailbox,
    ListMailboxes,
    MailboxRequest,
    TestMailboxSmtp,
)
from contracts.views import (
    ConnectionCheck,
    Created,
    ImapServerView,
    MailboxToday,
    MailboxView,
    ServerView,
)
from sequences import mailboxes, metrics
from sequences.bootstrap import Runtime
from sequences.encryption import NoKeys, SecretBox
from sequences.mailboxes import ConnectedMailbox
from sequences.messaging.rpc import Rejected
from sequences.oauth import AccessTokens, OAuthFailure
from services.mailer.adapters import check_smtp, smtp_settings_of
from services.mailer.rotation import cap_on

_INSERT = text(
    "INSERT INTO mailer.mailboxes (mailbox_id, workspace_id, address, display_name,"
    " owner_user_id, auth, oauth_provider, smtp, imap, limits, secrets, connected_at, updated_at)"
    " VALUES (:id, :ws, :address, :display_name, :owner, :auth, :provider, CAST(:smtp AS jsonb),"
    " CAST(:imap AS jsonb), CAST(:limits AS jsonb), :secrets, :now, :now)"
)
_UPDATE = text(
    "UPDATE mailer.mailboxes SET address = :address, display_name = :display_name,"
    " owner_user_id = :owner, auth = :auth, oauth_provider = :provider,"
    " smtp = CAST(:smtp AS jsonb), imap = CAST(:imap AS jsonb), limits = CAST(:limits AS jsonb),"
    " secrets = :secrets, updated_at = :now, healthy = true, problem = NULL"
    " WHERE mailbox_id = :id AND workspace_id = :ws"
)
# paused for sender-side rejections (services/mailer/mailbox_pauses.py): address -> why
_PAUSED = text("SELECT address, reason FROM mailer.mailbox_states"
               " WHERE paused AND address = ANY(:addresses)")
_USAGE = text(
    "SELECT DISTINCT ON (address) address, day, sent, hour, hour_sent FROM mailer.mailbox_usage"
    " WHERE address = ANY(:addresses) AND day >= :since ORDER BY address, day DESC"
)


class MailboxRegistry:
    def __init__(self, runtime: Runtime, box: SecretBox, tokens: AccessTokens | None = None):
        self.runtime = runtime
        self.box = box
        self.tokens = tokens or AccessTokens(runtime.engine, box)

    async def connect(self, command: ConnectMailbox) -> Created:
        mailbox_id = uuid.uuid4()
        await self._write(_INSERT, mailbox_id, command, {})
        return Created(id=mailbox_id)

    async def change(self, command: ChangeMailbox) -> Created:
        """Everything as given; a password left out keeps the stored one. Health starts over."""
        kept = (await self.mailbox(command.workspace_id, command.mailbox_id)).secrets
        await self._write(_UPDATE, command.mailbox_id, command, kept)
        return Created(id=command.mailbox_id)

    async def disconnect(self, command: DisconnectMailbox) -> Created:
        async with self.runtime.engine.begin() as conn:
            gone = await conn.execute(text("DELETE FROM mailer.mailboxes WHERE mailbox_id = :id"
                                           " AND workspace_id = :ws RETURNING 1"),
                                      {"id": command.mailbox_id, "ws": command.workspace_id})
            if gone.first() is None:
                raise Rejected(404, f"no such mailbox: {command.mailbox_id}", "mailbox_id")
        return Created(id=command.mailbox_id)

    async def list(self, query: ListMailboxes) -> list[MailboxView]:
        async with self.runtime.engine.connect() as conn:
            found = await mailboxes.load(conn, self.box, "workspace_id = :ws",
                                         {"ws": query.workspace_id})
        return await self._views(found)

    async def get(self, query: GetMailbox) -> MailboxView:
        return (await self._views([await self.mailbox(query.workspace_id, query.mailbox_id)]))[0]

    async def test_smtp(self, command: TestMailboxSmtp) -> ConnectionCheck:
        """Log in now; the answer (and the mailbox's health) says exactly what failed."""
        mailbox = await self.mailbox(command.workspace_id, command.mailbox_id)
        check = await self._check(mailbox)
        if not check.ok:
            check = check.model_copy(update={"error": mailbox.redact(check.error or "")})
        async with self.runtime.engine.begin() as conn:
            await mailboxes.mark(conn, mailbox.mailbox_id, check.ok,
                                 None if check.ok else f"SMTP: {check.error}",
                                 self.runtime.clock.now())
        return check

    async def usage_samples(self) -> list[metrics.Sample]:
        """Every connected mailbox's sends this day and hour against its caps (the Mailboxes
        dashboard); a window without a cap has no limit sample."""
        async with self.runtime.engine.connect() as conn:
            found = await mailboxes.load(conn, self.box)
        samples: list[metrics.Sample] = []
        for view in await self._views(found):
            today = view.today
            for window, sent, cap in (("day", today.sent_today, today.cap_today),
                                      ("hour", today.sent_this_hour, today.hourly_cap)):
                labels = {"mailbox": view.address, "window": window}
                samples.append(("sequences.mailbox.sent", labels, sent))
                if cap is not None:
                    samples.append(("sequences.mailbox.limit", labels, cap))
        return samples

    # --- pieces -----------------------------------------------------------------------------

    async def _check(self, mailbox: ConnectedMailbox) -> ConnectionCheck:
        if mailbox.auth != "oauth2":
            return await check_smtp(smtp_settings_of(mailbox))
        token = None
        for _ in range(2):  # a test refreshes the token as a send would (and says why it cannot)
            try:
                token = await self.tokens.token(mailbox, refused=token)
            except OAuthFailure as failure:
                return ConnectionCheck(ok=False, error=str(failure))
            check = await check_smtp(smtp_settings_of(mailbox, token))
            if check.ok or not (check.error or "").startswith("535"):
                break  # (535: the token was refused, perhaps expired early: refreshed once)
        return check

    async def mailbox(self, workspace_id, mailbox_id) -> ConnectedMailbox:
        """One mailbox of the workspace, secrets opened (404 when there is none)."""
        async with self.runtime.engine.connect() as conn:
            found = await mailboxes.load(conn, self.box, "mailbox_id = :id AND workspace_id = :ws",
                                         {"id": mailbox_id, "ws": workspace_id})
        if not found:
            raise Rejected(404, f"no such mailbox: {mailbox_id}", "mailbox_id")
        return found[0]

    async def _write(self, statement, mailbox_id, request: MailboxRequest, kept: dict) -> None:
        imap = request.imap
        secrets = {**kept, "smtp_password": request.smtp.password or kept.get("smtp_password"),
                   "imap_password": (imap.password if imap else None)
                   or kept.get("imap_password")}
        if request.auth == "oauth2":  # tokens come from the consent flow, not from here
            secrets.pop("smtp_password"), secrets.pop("imap_password")
        params = {
            "id": mailbox_id, "ws": request.workspace_id, "address": request.address.lower(),
            "display_name": request.display_name, "owner": request.owner_user_id,
            "auth": request.auth, "provider": request.oauth_provider,
            "smtp": request.smtp.model_dump_json(exclude={"password"}),
            "imap": imap.model_dump_json(exclude={"password"}) if imap else None,
            "limits": request.limits.model_dump_json(), "secrets": self._seal(secrets),
            "now": self.runtime.clock.now(),
        }
        try:
            async with self.runtime.engine.begin() as conn:
                written = await conn.execute(statement, params)
        except IntegrityError:
            raise Rejected(409, f"this workspace has a mailbox {request.address} already",
                           "address") from None
        if written.rowcount == 0:
            raise Rejected(404, f"no such mailbox: {mailbox_id}", "mailbox_id")

    def _seal(self, secrets: dict) -> str:
        try:
            return self.box.seal(secrets)
        except NoKeys as error:
            raise Rejected(503, str(error)) from None

    async def _views(self, found: list[ConnectedMailbox]) -> list[MailboxView]:
        now = self.runtime.clock.now()
        async with self.runtime.engine.connect() as conn:
            usage = {row.address: row for row in await conn.execute(_USAGE, {
                "addresses": [m.address for m in found],
                "since": (now - timedelta(days=1)).date()})}
            paused = dict((await conn.execute(_PAUSED, {
                "addresses": [m.address.lower() for m in found]})).all())
        return [_view(m, usage.get(m.address), now, paused.get(m.address.lower()))
                for m in found]


def _view(m: ConnectedMailbox, usage, now: datetime,
          paused_reason: str | None = None) -> MailboxView:
    hour = now.replace(minute=0, second=0, microsecond=0)
    in_hour = usage.hour_sent if usage is not None and usage.hour == hour else 0
    cap = cap_on(m.limits, m.connected_at.date(), now.date())
    return MailboxView(
        mailbox_id=m.mailbox_id, address=m.address, display_name=m.display_name,
        owner_user_id=m.owner_user_id, auth=m.auth, oauth_provider=m.oauth_provider,
        oauth_connected=bool(m.secrets.get("refresh_token")),
        smtp=ServerView(**_server(m.smtp), username=m.smtp_username,
                        has_password=bool(m.secrets.get("smtp_password"))),
        imap=ImapServerView(**_server(m.imap), username=m.imap_username,
                            has_password=bool(m.secrets.get("imap_password")),
                            folders=m.imap["folders"], idle=m.imap["idle"]) if m.imap else None,
        limits=m.limits, connected_at=m.connected_at, healthy=m.healthy, problem=m.problem,
        checked_at=m.checked_at,
        today=MailboxToday(sent_today=usage.sent if usage is not None else 0, cap_today=cap,
                           sent_this_hour=in_hour, hourly_cap=m.limits.hourly_cap,
                           warming_up=m.limits.warmup_start is not None
                           and cap != m.limits.daily_cap),
        paused_reason=paused_reason,
    )


def _server(server: dict) -> dict:
    return {"host": server["host"], "port": server["port"], "security": server["security"]}
