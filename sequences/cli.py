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
  sequences clock advance 2d            move the clock of a stack started with SEQUENCES_CLOCK=adjustable
  sequences contracts export docs/      write JSON Schema of every event and command
  sequences admin create-workspace Acme --email me@acme.com
                                        a workspace, its first user and an API key
  sequences contacts import leads.csv --workspace ID
                                        upsert contacts from a CSV file, with progress
  sequences mail classify reply.eml     what the thread-watcher decides about a message, and why
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
    up.set_defaults(func=_up)

    run = commands.add_parser("run", help="run one service in the foreground")
    run.add_argument("service", choices=SERVICES)
    run.set_defaults(func=lambda a: service_module(a.service).main())

    relay = commands.add_parser("relay", help="run only the outbox relay (tests, operations)")
    relay.set_defaults(func=lambda a: asyncio.run(_relay()))

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
                    " Tags and lists are separated by ';'. Needs NATS_URL.")
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

    _add_mail_commands(commands)

    capture = commands.add_parser("capture", help="run the local SMTP capture server")
    capture.add_argument("args", nargs=argparse.REMAINDER)
    capture.set_defaults(func=lambda a: _capture(a.args))

    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130


def _add_mail_commands(commands) -> None:
    mail = commands.add_parser("mail", help="replies, bounces and auto-replies (thread-watcher)")
    mail_commands = mail.add_subparsers(dest="action", required=True)
    classify = mail_commands.add_parser(
        "classify", help="what the thread-watcher decides about a raw message, and why",
        description="Reply, bounce hard|soft, auto-reply or unrelated, with the reasons. With"
                    " DATABASE_URL set, also which enrollment it concerns.")
    classify.add_argument("file", type=Path, metavar="FILE.eml")
    classify.add_argument("--json", action="store_true", help="print the decision as JSON")
    classify.set_defaults(func=lambda a: _mail_commands().classify(a.file, a.json))
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
                    clock=args.clock)
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


async def _relay() -> None:
    from sequences.bootstrap import configure_logging
    from sequences.config import Settings
    from sequences.eventlog.relay import Relay
    from sequences.messaging.nats import connect, ensure_events_stream

    settings = Settings.from_env()
    configure_logging(settings.log_level, "relay")
    nc = await connect(settings.nats_url, "sequences-relay")
    await ensure_events_stream(nc.jetstream(), settings.nats_replicas)
    await Relay(settings.database_url, nc.jetstream()).run()


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

    nc = await connect(Settings.from_env().nats_url, "sequences-cli")
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
        parsed = contact_import.parse(contact_import.decode(args.file.read_bytes()), mapping)
    except contact_import.ImportFileError as error:
        print(f"sequences: {args.file}: {error}", file=sys.stderr)
        return 2

    def progress(done: int, total: int) -> None:
        share = done / total if total else 1
        print(f"\rread {done:,} of {total:,} lines ({share:.0%})", end="",
              file=sys.stderr, flush=True)

    nc = await connect(Settings.from_env().nats_url, "sequences-cli")
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
    from contracts.schema import export_asyncapi, export_json_schemas

    for path in export_json_schemas(directory):
        print(path)
    print(export_asyncapi(directory.parent / "asyncapi.json"))


def _capture(argv: list[str]) -> None:
    from sequences.devstack.capture import main as capture_main

    capture_main(argv)


if __name__ == "__main__":
    sys.exit(main())
