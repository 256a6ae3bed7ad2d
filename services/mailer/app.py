"""The mailer service: renders and sends email steps over SMTP, records EmailSent."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sequences.bootstrap import Runtime, ServiceParts, run_service
from sequences.db import Migrations
from services.mailer.adapters import SmtpSender, SmtpSettings
from services.mailer.handlers import MailerHandlers, subscription

NAME = "mailer"
MIGRATIONS = Migrations(NAME, Path(__file__).parent / "migrations")


def build(runtime: Runtime) -> ServiceParts:
    smtp = SmtpSender(SmtpSettings.from_url(runtime.settings.smtp_url))
    return ServiceParts(subscriptions=[subscription(MailerHandlers(runtime, smtp))])


def main() -> None:
    asyncio.run(run_service(NAME, build, (MIGRATIONS,)))
