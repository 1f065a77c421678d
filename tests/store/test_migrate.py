"""dbmate-format migrations: parsing, applying once, and the schema_migrations table."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from romancy_nb.store import migrate, open_store


def test_parse_splits_up_and_down() -> None:
    text = "-- migrate:up\nCREATE TABLE a (x);\n\n-- migrate:down\nDROP TABLE a;\n"
    m = migrate.parse("20260101000000", "a", text)
    assert m.up == "CREATE TABLE a (x);"
    assert m.down == "DROP TABLE a;"
    with pytest.raises(ValueError, match="migrate:up"):
        migrate.parse("1", "broken", "CREATE TABLE b (x);")


def test_shipped_migrations_are_ordered_and_reversible() -> None:
    migrations = migrate.load("romancy_nb.store.sqlite.migrations")
    assert migrations, "no migrations shipped"
    assert [m.version for m in migrations] == sorted(m.version for m in migrations)
    assert all(m.up and m.down for m in migrations)


def test_migrate_applies_once_and_records_versions(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = open_store(path)
    applied = store.migrate()
    assert applied == [m.version for m in migrate.load("romancy_nb.store.sqlite.migrations")]
    assert store.migrate() == []  # idempotent
    store.close()
    connection = apsw.Connection(str(path))
    versions = [r[0] for r in connection.execute("SELECT version FROM schema_migrations")]
    assert versions == applied
    tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
    assert {"workflow_instances", "workflow_history", "step_attempts", "workers"} <= tables


def test_down_migrations_undo_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    store = open_store(path)
    store.migrate()
    store.close()
    connection = apsw.Connection(str(path))
    for m in reversed(migrate.load("romancy_nb.store.sqlite.migrations")):
        connection.execute(m.down)
    left = {
        r[0]
        for r in connection.execute(
            "SELECT name FROM sqlite_schema WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    assert left == {"schema_migrations"}

