"""dbmate-format migrations: parsing, applying once, and the schema_migrations table."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

import romancy_nb as rn
from romancy_nb.store import Store, migrate, open_store


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


# statement by statement: APSW stops a multi-statement string at the first row it returns

_WITH_SELECT = """-- migrate:up
CREATE TABLE extra_a (x INTEGER);
SELECT 1; -- returns a row
INSERT INTO extra_a VALUES (1);
CREATE TABLE extra_b (y TEXT DEFAULT 'semi;colon');
CREATE TRIGGER extra_t AFTER INSERT ON extra_a BEGIN INSERT INTO extra_b (y) VALUES ('x;'); END;
SELECT x FROM extra_a;
INSERT INTO extra_a VALUES (2)
-- migrate:down
DROP TABLE extra_b;
DROP TABLE extra_a;
"""

_FAILING = """-- migrate:up
CREATE TABLE extra_c (x INTEGER);
SELECT 1;
INSERT INTO extra_c VALUES (1);
INSERT INTO no_such_table VALUES (1);
CREATE TABLE extra_d (x INTEGER);
-- migrate:down
DROP TABLE extra_c;
"""


def _with_extra(monkeypatch: pytest.MonkeyPatch, name: str, text: str) -> str:
    version = "29990101000000"
    shipped = migrate.load
    extra = migrate.parse(version, name, text)
    monkeypatch.setattr(migrate, "load", lambda package: [*shipped(package), extra])
    return version


def _rows(store: Store, table: str) -> list[tuple[object, ...]]:
    found = store.read_table(table)
    assert found is not None, f"no table {table}"
    return found[1]


def _versions(path: Path) -> list[str]:
    connection = apsw.Connection(str(path))
    try:
        return [r[0] for r in connection.execute("SELECT version FROM schema_migrations")]
    finally:
        connection.close()


def test_a_migration_with_a_select_runs_every_statement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = _with_extra(monkeypatch, "with_select", _WITH_SELECT)
    path = tmp_path / "select.db"
    store = open_store(path)
    try:
        assert store.migrate()[-1] == version
        assert _rows(store, "extra_a") == [(1,), (2,)]
        assert _rows(store, "extra_b") == [("x;",)]
    finally:
        store.close()
    assert _versions(path)[-1] == version


def test_a_failing_statement_rolls_the_whole_migration_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = _with_extra(monkeypatch, "failing", _FAILING)
    path = tmp_path / "failing.db"
    store = open_store(path)
    try:
        with pytest.raises(rn.StoreError) as info:
            store.migrate()
        assert f"{version}_failing" in str(info.value)
        assert "statement 4" in str(info.value) and "no_such_table" in str(info.value)
        assert store.read_table("extra_c") is None  # nothing of it was applied
        assert store.read_table("extra_d") is None
        assert store.read_table("workflow_instances") is not None  # the shipped ones were
    finally:
        store.close()
    assert version not in _versions(path)
