"""Migration files, and the order a rebuild replays in. Each service applies its migrations by
integer version, so two files of one service with the same number (two branches each adding
"0006_...") would leave one of them unapplied on every database that already has that version."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from sequences.bootstrap import EVENTLOG_MIGRATIONS
from sequences.db import Migrations
from sequences.services import all_migrations

ROOT = Path(__file__).resolve().parents[2]


def duplicated_versions(migrations: Migrations) -> dict[int, list[str]]:
    names: dict[int, list[str]] = defaultdict(list)
    for version, path in migrations.files():
        names[version].append(path.name)
    return {version: sorted(files) for version, files in names.items() if len(files) > 1}


def test_no_two_migrations_of_one_service_share_a_version():
    components = (EVENTLOG_MIGRATIONS, *all_migrations())
    assert len(components) >= 6  # the event log and every service with tables
    clashes = {m.component: found for m in components if (found := duplicated_versions(m))}
    assert clashes == {}, f"migration versions used twice: {clashes}"


def test_every_migration_folder_is_one_the_services_apply():
    """A folder of SQL files no service applies would be a migration never run."""
    applied = {m.directory.resolve() for m in (EVENTLOG_MIGRATIONS, *all_migrations())}
    on_disk = {p.parent.resolve() for p in ROOT.glob("services/*/migrations/*.sql")}
    assert on_disk <= applied, on_disk - applied


def test_a_repeated_version_is_found(tmp_path):
    for name in ("0006_one.sql", "0006_other.sql", "0007_fine.sql", "12_short.sql"):
        (tmp_path / name).write_text("SELECT 1;")
    assert duplicated_versions(Migrations("x", tmp_path)) == {6: ["0006_one.sql",
                                                                 "0006_other.sql"]}


def test_a_rebuild_replays_contacts_in_log_order():
    """One live contact per address: a contact deleted, then a new one with its address, must
    replay in that order (sorting contacts by version put the new one's v1 first, and the
    rebuild stopped on the unique index). Other categories still come in runs."""
    from datetime import datetime, timezone

    from sequences.eventlog.store import StoredEvent
    from sequences.projections import _in_replay_order

    def event(category, stream, version, type_):
        return StoredEvent(category, None, stream, version, type_, 1,
                           datetime(2026, 1, 1, tzinfo=timezone.utc), {})

    batch = [event("enrollment", "enrollment-1", 2, "EnrollmentStopped"),
             event("contact", "contact-a", 1, "ContactCreated"),
             event("contact", "contact-a", 2, "ContactDeleted"),
             event("contact", "contact-b", 1, "ContactCreated"),
             event("sequence", "sequence-1", 1, "SequenceCreated")]
    replayed = [(e.stream_id, e.type) for e in _in_replay_order(batch)]
    assert replayed == [("sequence-1", "SequenceCreated"), ("contact-a", "ContactCreated"),
                        ("contact-a", "ContactDeleted"), ("contact-b", "ContactCreated"),
                        ("enrollment-1", "EnrollmentStopped")]
