"""The mailer service: renders and sends email steps over SMTP, records EmailSent; turns SMS and
call steps into tasks; serves previews, test sends and open tracking."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from contracts.commands import PreviewStep, RecordEmailOpen, SendTestEmail
from sequences.bootstrap import Runtime, ServiceParts, run_service
from sequences.db import Migrations
from sequences.signing import signer_from_env
from services.mailer.adapters import CaptureVerifier, Mailboxes
from services.mailer.handlers import MailerHandlers, subscription

NAME = "mailer"
MIGRATIONS = Migrations(NAME, Path(__file__).parent / "migrations")


def build(runtime: Runtime) -> ServiceParts:
    verify_url = os.environ.get("SMTP_VERIFY_URL")
    handlers = MailerHandlers(
        runtime,
        Mailboxes(runtime.settings.smtp_url, os.environ.get("MAILBOXES")),
        signer_from_env(),
        CaptureVerifier(verify_url) if verify_url else None,
        retry_limit=int(os.environ.get("SMTP_RETRY_LIMIT", "5")),
    )
    return ServiceParts(
        subscriptions=[subscription(handlers)],
        requests={
            PreviewStep: handlers.preview_step,
            SendTestEmail: handlers.send_test_email,
            RecordEmailOpen: handlers.record_open,
        },
    )


def main() -> None:
    asyncio.run(run_service(NAME, build, (MIGRATIONS,)))
