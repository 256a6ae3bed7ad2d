"""The mailer service: renders and sends email steps over SMTP, records EmailSent; turns SMS and
call steps into tasks; serves previews, test sends and open tracking."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from contracts.commands import (
    ChangeMailbox,
    ConnectMailbox,
    DisconnectMailbox,
    FinishMailboxConsent,
    GetMailbox,
    GetMailboxDeliverability,
    ListMailboxes,
    ListOAuthClients,
    PreviewStep,
    ChooseVariantWinner,
    RecordEmailClick,
    RecordEmailClicks,
    RecordEmailOpen,
    ResumeMailbox,
    SendTestEmail,
    SetOAuthClient,
    StartMailboxConsent,
    TestMailboxSmtp,
)
from sequences.bootstrap import Runtime, ServiceParts, run_service
from sequences.db import Migrations
from sequences.signing import signer_from_env
from services.mailer.adapters import CaptureVerifier, Mailboxes
from sequences.encryption import SecretBox
from services.mailer.handlers import MailerCopies, subscription
from services.mailer.requests import MailerRequests
from services.mailer.sending import StepSender
from services.mailer.mailbox_pauses import MailboxGuard, PausePolicy
from services.mailer.mailboxes import MailboxRegistry
from services.mailer.oauth_consent import OAuthConsents
from sequences.oauth import AccessTokens

NAME = "mailer"
MIGRATIONS = Migrations(NAME, Path(__file__).parent / "migrations")


def build(runtime: Runtime) -> ServiceParts:
    verify_url = os.environ.get("SMTP_VERIFY_URL")
    box = SecretBox.from_env()
    tokens = AccessTokens(runtime.engine, box)
    registry = MailboxRegistry(runtime, box, tokens)
    consents = OAuthConsents(runtime, box, registry)
    mailboxes = Mailboxes(runtime.settings.smtp_url, os.environ.get("MAILBOXES"))
    sender = StepSender(
        runtime, mailboxes, signer_from_env(),
        CaptureVerifier(verify_url) if verify_url else None,
        retry_limit=int(os.environ.get("SMTP_RETRY_LIMIT", "5")),
        box=box, tokens=tokens,
    )
    requests = MailerRequests(runtime, mailboxes)
    guard = MailboxGuard(runtime, PausePolicy.from_env())
    return ServiceParts(
        subscriptions=[subscription(MailerCopies(), sender, requests, guard)],
        requests={
            GetMailboxDeliverability: guard.deliverability,
            ResumeMailbox: guard.resume,
            PreviewStep: requests.preview_step,
            SendTestEmail: requests.send_test_email,
            RecordEmailOpen: requests.record_open,
            RecordEmailClick: requests.record_click,
            RecordEmailClicks: requests.record_clicks,
            ChooseVariantWinner: requests.choose_winner,
            ConnectMailbox: registry.connect,
            ChangeMailbox: registry.change,
            DisconnectMailbox: registry.disconnect,
            ListMailboxes: registry.list,
            GetMailbox: registry.get,
            TestMailboxSmtp: registry.test_smtp,
            SetOAuthClient: consents.set_client,
            ListOAuthClients: consents.list_clients,
            StartMailboxConsent: consents.start,
            FinishMailboxConsent: consents.finish,
        },
        samples=[(("sequences.mailbox.sent", "sequences.mailbox.limit"), registry.usage_samples)],
    )


def main() -> None:
    asyncio.run(run_service(NAME, build, (MIGRATIONS,)))
