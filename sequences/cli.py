"""The `sequences` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path

from sequences.services import SERVICES, service_module

_EPILOG = """
examples:
  sequences up                          run the whole system locally (embedded NATS, PostgreSQL, SMTP)
  sequences run mailer                  run one service (reads DATABASE_URL, NATS_URL, SMTP_URL, ...)
  sequences projections rebuild         rebuild every read model from the event log
  sequences status                      lag per consumer, outbox, due steps, sends, mailboxes, errors
  sequences clock advance 2d            move the clock of a stack started with SEQUENCES_CLOCK=adjustable
  sequences contracts export docs/      write JSON Schema of every event and command
  sequences admin create-workspace Acme --email me@acme.com
                                        a workspace, its first user and an API key
  sequences contacts import leads.csv --workspace ID
                                        upsert contacts from a CSV file, with progress
  sequences mail classify FILE|DIR|-    what each message is (bounce reason, auto-reply, reply), and why
  sequences mail drop-reply --latest    answer the newest captured email (dev stack mailbox)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sequences",
        description="Sequences: automatic sales follow-up over NATS JetStream and PostgreSQL.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="run the whole system on embedded defaults")
    up.add_argument("--data-dir", type=Path, default=Path(".data"),
                    help="where PostgreSQL, NATS and captured mail live (default: ./.data)")
    up.add_argument("--gateway-port", type=int, default=8700)
    up.add_argument("--clock", choices=["adjustable", "system"], default="adjustable",
                    help="adjustable lets `sequences clock advance` move time (default)")
    up.add_argument("--nats-cluster", type=int, default=1, metavar="N",
                    help="run N nats-server nodes with routes on loopback ports and the events"
                    " stream at R<N> (3: the production shape; default 1)")
    up.set_defaults(func=_up)

    run = commands.add_parser("run", help="run one service in the foreground")
    run.add_argument("service", choices=SERVICES)
    run.set_defaults(func=lambda a: service_module(a.service).main())

    relay = commands.add_parser("relay", help="run only the outbox relay (tests, operations)")
    relay.set_defaults(func=lambda a: asyncio.run(_relay()))
    relay_commands = relay.add_subparsers(dest="action")
    adopt = relay_commands.add_parser(
        "adopt-stream", help="after the events stream was deleted and created again: publish the"
        " whole log to it in order, so the relay publishes again (consumers skip what they have)")
    adopt.set_defaults(func=lambda a: asyncio.run(_relay(adopt=True)))

    migrate = commands.add_parser("migrate", help="apply database migrations and exit")
    migrate.set_defaults(func=lambda a: asyncio.run(_migrate()))

    projections = commands.add_parser("projections", help="read models")
    projections_commands = projections.add_subparsers(dest="action", required=True)
    rebuild = projections_commands.add_parser("rebuild", help="rebuild read models from the log")
    rebuild.set_defaults(func=lambda a: asyncio.run(_rebuild()))

    clock = commands.add_parser("clock", help="the adjustable clock of tests and the dev stack")
    clock_commands = clock.add_subparsers(dest="action", required=True)
    advance = clock_commands.add_parser("advance", help="move time forward, e.g. 2d, 6h, 90s")
    advance.add_argument("duration")
    advance.set_defaults(func=lambda a: asyncio.run(_advance(a.duration)))
    show = clock_commands.add_parser("show", help="print the current offset")
    show.set_defaults(func=lambda a: asyncio.run(_advance(None)))

    contracts = commands.add_parser("contracts", help="the public contracts")
    contracts_commands = contracts.add_subparsers(dest="action", required=True)
    export = contracts_commands.add_parser(
        "export", help="write JSON Schema files, and the AsyncAPI document one folder up")
    export.add_argument("directory", type=Path, nargs="?", default=Path("docs/schemas"))
    export.set_defaults(func=lambda a: _export(a.directory))

    contacts = commands.add_parser("contacts", help="contacts")
    contacts_commands = contacts.add_subparsers(dest="action", required=True)
    import_ = contacts_commands.add_parser(
        "import", help="upsert contacts by email from a CSV file (UTF-8, UTF-8 BOM, CP949)",
        description="Columns named like the fields (name, company, job_title, owner_name, email,"
                    " phone, status, tags, lists) or in Korean (고객명, 회사명, 직함, 담당자명,"
                    " 이메일, 전화번호, 상태, 태그, 리스트) are understood; map others with --map."
                    " Tags and lists are separated by ';'. An empty timezone (IANA name) is"
                    " filled where the row's country (and US state: columns country, region)"
                    " or phone number decides it. Needs NATS_URL.")
    import_.add_argument("file", type=Path)
    import_.add_argument("--workspace", type=uuid.UUID, required=True, metavar="ID",
                         help="the workspace to import into (`GET /v1/me` or `sequences admin"
                              " create-workspace` tells its id)")
    import_.add_argument("--map", action="append", default=[], metavar="COLUMN:FIELD",
                         help="read COLUMN as FIELD (repeatable), e.g. --map 'E-mail:email'")
    import_.add_argument("--report", type=Path, help="write the full report (failed rows) as JSON")
    import_.set_defaults(func=lambda a: asyncio.run(_import_contacts(a)))

    admin = commands.add_parser("admin", help="workspaces and keys (needs DATABASE_URL)")
    admin_commands = admin.add_subparsers(dest="action", required=True)
    create_workspace = admin_commands.add_parser(
        "create-workspace",
        help="create a workspace, its first user (an admin, with a password) and an API key (printed once)")
    create_workspace.add_argument("name", help="the workspace's name, e.g. your company")
    create_workspace.add_argument("--email", required=True,
                                  help="the first user's email (where 'send test to me' goes)")
    create_workspace.add_argument("--user-name", default="", help="the first user's name")
    create_workspace.add_argument("--json", action="store_true",
                                  help="print workspace_id, user_id, user_email, api_key and password as JSON")
    create_workspace.set_defaults(func=lambda a: asyncio.run(_create_workspace(a)))
    set_password = admin_commands.add_parser(
        "set-password", help="give a user a new random password to sign in with (printed once)")
    set_password.add_argument("email", help="the user's email (in every workspace it is in)")
    set_password.add_argument("--json", action="store_true", help="print the password as JSON")
    set_password.set_defaults(func=lambda a: asyncio.run(_set_password(a)))
    new_key = admin_commands.add_parser(
        "new-encryption-key", help="print a new key for SEQUENCES_ENCRYPTION_KEYS (put it first)")
    new_key.set_defaults(func=lambda a: _new_encryption_key())
    rotate = admin_commands.add_parser(
        "rotate-secrets", help="re-encrypt every stored mailbox secret under the first key of"
                               " SEQUENCES_ENCRYPTION_KEYS (then the old keys can go)")
    rotate.set_defaults(func=lambda a: asyncio.run(_rotate_secrets()))

    _add_mail_commands(commands)

    capture = commands.add_parser("capture", help="run the local SMTP capture server")
    capture.add_argument("args", nargs=argparse.REMAINDER)
    capture.set_defaults(func=lambda a: _capture(a.args))

    status = commands.add_parser(
        "status", help="the operations figures: consumer lag, outbox, due steps, sends, errors")
    status.add_argument("--json", action="store_true", help="print them as JSON")
    status.set_defaults(func=lambda a: asyncio.run(_status(a)))

    args = parser.parse_args(argv)
    if args.command not in ("up", "capture"):
        from sequences.devstack.servers import use_running_stack

        if said := use_running_stack():
            print(said, file=sys.stderr)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        if (line := _setting_problem(error)) is None:
            raise
        print(f"sequences: {line}", file=sys.stderr)
        return 2


def _setting_problem(error: Exception) -> str | None:
    """One line for a missing or wrong setting (no traceback), or None for anything else."""
    from nats.errors import NoServersError
    from sqlalchemy.exc import ArgumentError, OperationalError

    from sequences.config import ConfigError

    if isinstance(error, ConfigError):
        return str(error)
    if isinstance(error, (NoServersError, ConnectionRefusedError)):
        return "cannot reach NATS at NATS_URL (is it running, is the address right?)"
    if isinstance(error, (OperationalError, ArgumentError)):
        first = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        return f"cannot use DATABASE_URL: {first}"
    return None


async def _status(args) -> int:
    from datetime import datetime, timezone

    from sequences.config import Settings
    from sequences.db import create_engine
    from sequences.messaging.nats import connect
    from sequences.operations import figures

    settings = Settings.from_env()
    engine = create_engine(settings.database_url, pool_size=1)
    nc = await connect(settings.nats_url, "sequences-cli", attempts=2)
    try:
        found = await figures(engine, nc.jetstream(), datetime.now(timezone.utc))
    finally:
        await nc.close()
        await engine.dispose()
    if args.json:
        print(json.dumps(found.as_json(), default=str, indent=2))
    else:
        print(_status_text(found))
    return 0


def _status_text(found) -> str:
    def shown(value) -> str:  # a figure that could not be read is "-"
        return "-" if value is None else str(value)

    def seconds(value) -> str:
        return "-" if value is None else f"{value:.0f} s"

    lines = [f"at {found.at:%Y-%m-%d %H:%M:%S %Z}", "", "consumer                      pending  oldest"]
    lines += [f"{lag.consumer:<29} {lag.pending:>7}  {seconds(lag.oldest_age)}"
              for lag in found.consumers] or ["(NATS did not answer)"]
    lines += ["",
              f"outbox          {shown(found.outbox_depth)} events,"
              f" oldest {seconds(found.outbox_oldest_age)}",
              f"due steps       {shown(found.due_pending)} pending, {shown(found.due_late)} late,"
              f" oldest late {seconds(found.due_oldest_late_age)}",
              f"sent            {shown(found.sent_last_minute)} in the last minute",
              f"mailboxes       {shown(found.mailboxes_healthy)} healthy,"
              f" {len(found.mailboxes_unhealthy)} failing",
              *(f"  failing       {address}: {problem}"
                for address, problem in found.mailboxes_unhealthy),
              f"webhooks        {shown(found.webhooks_pending)} pending,"
              f" oldest {seconds(found.webhooks_oldest_age)}",
              "", f"recent handler errors: {len(found.errors) or 'none'}"]
    lines += [f"  {error.at:%H:%M:%S} {error.consumer} {error.event_type} {error.stream_id}"
              f" trace {error.trace_id or '-'}: {error.error.splitlines()[0][:120]}"
              for error in found.errors[:10]]
    return "\n".join(lines)


def _add_mail_commands(commands) -> None:
    mail = commands.add_parser("mail", help="replies, bounces and auto-replies (thread-watcher)")
    mail_commands = mail.add_subparsers(dest="action", required=True)
    classify = mail_commands.add_parser(
        "classify", help="what raw messages are (bounce, auto-reply, reply, other), and why",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Per message: its kind (bounce, auto-reply, reply, other); for a bounce the"
                    " class, reason and rule that decided it\n(docs/bounce-reasons.md), the failed"
                    " recipient and the Message-ID of our message it carries; notes on what was"
                    "\nmissing or broken (no-recipient, no-original-message-id, broken-mime,"
                    " unknown-charset); then what the\nthread-watcher would record and why. With"
                    " DATABASE_URL set it also names the enrollment (read only).",
        epilog="examples:\n"
               "  sequences mail classify bounce.eml\n"
               "  sequences mail classify ~/Maildir/.Bounces          # every message in it\n"
               "  sequences mail classify --json tests/fixtures/mail | jq -r .reason | sort | uniq -c\n"
               "  cat message.eml | sequences mail classify -")
    classify.add_argument("paths", nargs="+", metavar="FILE|DIR|-",
                          help="a raw message (RFC 5322), a directory (its *.eml files and Maildir"
                               " cur/ and new/ messages, recursively) or - for standard input")
    classify.add_argument("--json", action="store_true",
                          help="one JSON object per message and line (JSON Lines)")
    classify.set_defaults(func=lambda a: _mail_commands().classify(a.paths, a.json))
    for kind, what in (("reply", "a reply"), ("bounce", "a bounce (550 5.1.1)"),
                       ("auto-reply", "an out-of-office answer")):
        drop = mail_commands.add_parser(
            f"drop-{kind}", help=f"dev stack: put {what} to a captured email in its mailbox")
        which = drop.add_mutually_exclusive_group(required=True)
        which.add_argument("--message-id", help="the captured email to answer")
        which.add_argument("--latest", action="store_true", help="answer the newest one")
        drop.add_argument("--data-dir", type=Path, default=Path(".data"),
                          help="the dev stack's data directory (default: ./.data)")
        if kind == "reply":
            drop.add_argument("--text", default="", help="what the reply says")
        if kind == "bounce":
            drop.add_argument("--soft", action="store_true", help="mailbox full (552 5.2.2)")
        drop.set_defaults(func=lambda a, kind=kind: _mail_commands().drop(kind, a))


def _mail_commands():
    from services.thread_watcher import commands

    return commands


def _up(args) -> int:
    from sequences.devstack.stack import StackConfig, run_until_interrupted

    return run_until_interrupted(
        StackConfig(data_dir=args.data_dir.resolve(), gateway_port=args.gateway_port,
                    clock=args.clock, nats_cluster=args.nats_cluster)
    )


async def _runtime_parts():
    from sequences.bootstrap import EVENTLOG_MIGRATIONS, configure_logging
    from sequences.config import Settings
    from sequences.db import create_engine, migrate
    from sequences.services import all_migrations

    settings = Settings.from_env()
    configure_logging(settings.log_level, "cli")
    engine = create_engine(settings.database_url, pool_size=2)
    await migrate(engine, EVENTLOG_MIGRATIONS, *all_migrations())
    return settings, engine


async def _migrate() -> None:
    _, engine = await _runtime_parts()
    await engine.dispose()
    print("migrations applied")


async def _relay(adopt: bool = False) -> None:
    import psycopg
    from psycopg.rows import dict_row

    from sequences.bootstrap import configure_logging
    from sequences.config import Settings
    from sequences.db import libpq_url
    from sequences.eventlog.relay import Relay
    from sequences.messaging.nats import connect, ensure_events_stream

    settings = Settings.from_env()
    configure_logging(settings.log_level, "relay")
    nc = await connect(settings.nats_url, "sequences-relay")
    await ensure_events_stream(nc.jetstream(), settings.nats_replicas)
    relay = Relay(settings.database_url, nc.jetstream(), keep_seconds=settings.relay_keep_seconds)
    if not adopt:
        await relay.run()
        return
    async with await psycopg.AsyncConnection.connect(
            libpq_url(settings.database_url), autocommit=True, row_factory=dict_row) as conn:
        published = await relay.adopt_stream(conn)
    await nc.close()
    print(f"published the whole log ({published} events) to the events stream; the relay"
          " publishes to it again")


async def _rebuild() -> None:
    from sequences.clock import SystemClock
    from sequences.eventlog.store import EventStore
    from sequences.projections import rebuild
    from sequences.services import all_projections

    _, engine = await _runtime_parts()
    store = EventStore(SystemClock())
    for projection in all_projections():
        name = projection.subscription.name

        def progress(n: int, name=name) -> None:
            print(f"\r{name}: {n:,} events replayed", end="", file=sys.stderr, flush=True)

        total = await rebuild(engine, store, projection, progress=progress)
        print(f"\r{name}: rebuilt from {total:,} events", file=sys.stderr)
    await engine.dispose()


async def _advance(duration: str | None) -> None:
    from sequences import clock
    from sequences.config import Settings
    from sequences.messaging.nats import connect

    nc = await connect(Settings.from_env().nats_url, "sequences-cli", attempts=2)
    js = nc.jetstream()
    offset = await (clock.advance(js, clock.parse_duration(duration)) if duration
                    else clock.read_offset(js))
    await nc.close()
    print(f"clock offset: {offset} (now {clock.SystemClock().now() + offset:%Y-%m-%d %H:%M:%S} UTC)")


async def _import_contacts(args) -> int:
    from sequences.config import Settings
    from sequences.messaging.nats import connect
    from services.enrollment import contact_import

    mapping = dict(item.rsplit(":", 1) for item in args.map if ":" in item)
    try:
        if args.file.stat().st_size > contact_import.MAX_IMPORT_BYTES:
            raise contact_import.ImportFileError("file", "the file is over 50 MB: split it")
        parsed = contact_import.parse(args.file.read_bytes(), mapping)
    except contact_import.ImportFileError as error:
        print(f"sequences: {args.file}: {error}", file=sys.stderr)
        return 2

    def progress(done: int, total: int) -> None:
        share = done / total if total else 1
        print(f"\rread {done:,} of {total:,} lines ({share:.0%})", end="",
              file=sys.stderr, flush=True)

    nc = await connect(Settings.from_env().nats_url, "sequences-cli", attempts=2)
    try:
        report = await contact_import.import_contacts(nc, args.workspace, parsed, progress)
    finally:
        await nc.close()
    print(file=sys.stderr)
    print(f"created {report.created:,}, updated {report.updated:,},"
          f" unchanged {report.unchanged:,}, failed {len(report.failed):,}")
    for failure in report.failed[:20]:
        print(f"  line {failure.row}: {failure.field or 'row'}: {failure.message}")
    if len(report.failed) > 20:
        print(f"  ... and {len(report.failed) - 20:,} more (--report FILE writes them all)")
    if args.report:
        args.report.write_text(report.model_dump_json(indent=2))
    return 0


async def _create_workspace(args) -> int:
    from pydantic import EmailStr, TypeAdapter, ValidationError

    from services.gateway import accounts

    try:
        TypeAdapter(EmailStr).validate_python(args.email)
    except ValidationError:
        print(f"sequences: --email: not an email address: {args.email!r}", file=sys.stderr)
        return 2
    from services.gateway import sign_in

    _, engine = await _runtime_parts()
    password = _new_password()
    try:
        async with engine.begin() as conn:
            workspace, key = await accounts.create_workspace(conn, args.name, args.email,
                                                             args.user_name)
            await sign_in.set_password(conn, workspace.user.user_id, password)
    finally:
        await engine.dispose()
    if args.json:
        print(json.dumps({"workspace_id": str(workspace.workspace_id),
                          "user_id": str(workspace.user.user_id),
                          "user_email": workspace.user.email, "api_key": key.key,
                          "password": password}))
        return 0
    print(f"workspace {workspace.name}: {workspace.workspace_id}")
    print(f"user {workspace.user.email}: {workspace.user.user_id}")
    print(f"password to sign in to the app (shown once; keep it): {password}")
    print(f"API key (shown once; keep it): {key.key}")
    return 0


def _new_password() -> str:
    import secrets

    return secrets.token_urlsafe(12)  # 96 bits, 16 characters


def _new_encryption_key() -> int:
    from sequences.encryption import SecretBox

    print(SecretBox.new_key())
    return 0


async def _rotate_secrets() -> int:
    from sequences.encryption import SecretBox
    from sequences.mailboxes import rotate_all

    _, engine = await _runtime_parts()
    try:
        async with engine.begin() as conn:
            count = await rotate_all(conn, SecretBox.from_env())
    finally:
        await engine.dispose()
    print(f"{count} stored secrets (mailboxes, OAuth clients) now under the first key of"
          " SEQUENCES_ENCRYPTION_KEYS")
    return 0


async def _set_password(args) -> int:
    from sqlalchemy import text

    from services.gateway import sign_in

    _, engine = await _runtime_parts()
    password = _new_password()
    try:
        async with engine.begin() as conn:
            users = (await conn.execute(text(
                "SELECT user_id FROM gateway.users WHERE lower(email) = lower(:e)"),
                {"e": args.email})).all()
            for user in users:
                await sign_in.set_password(conn, user.user_id, password)
    finally:
        await engine.dispose()
    if not users:
        print(f"sequences: no user with the email {args.email!r}", file=sys.stderr)
        return 1
    print(json.dumps({"password": password}) if args.json
          else f"new password for {args.email} (shown once; every session of theirs ended):"
               f" {password}")
    return 0


def _export(directory: Path) -> None:
    from contracts.schema import export_asyncapi, export_json_schemas, export_webhooks_openapi

    for path in export_json_schemas(directory):
        print(path)
    print(export_asyncapi(directory.parent / "asyncapi.json"))
    print(export_webhooks_openapi(directory.parent / "webhooks-openapi.json"))


def _capture(argv: list[str]) -> None:
    from sequences.devstack.capture import main as capture_main

    capture_main(argv)


if __name__ == "__main__":
    sys.exit(main())
