"""The SQLite schema: recognising a romancy_nb database, and applying its migrations.

Migrations run on a short-lived connection of their own, with the busy timeout, so the
engine's connection never has to wait for a lock. Each pending migration is one
``BEGIN IMMEDIATE`` transaction that re-reads ``schema_migrations`` under the write lock,
runs the file statement by statement, and records its version: when several processes open
a new file at once, each waits for the lock in turn and each migration is applied once; a
statement that fails rolls the whole migration back and records nothing.

Statement by statement, because APSW runs a multi-statement string lazily: ``execute``
returns at the first statement that yields rows (a ``SELECT``) and the rest never runs
unless the cursor is read to the end.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import apsw

from romancy_nb.errors import StoreError
from romancy_nb.store import migrate
from romancy_nb.store.sqlite.connections import Connections, rollback_quietly
from romancy_nb.store.sqlite.translate import translate

PACKAGE = "romancy_nb.store.sqlite.migrations"
_TABLE = "schema_migrations"


def shipped() -> list[migrate.Migration]:
    """The migrations this version of romancy_nb ships, oldest first."""
    return migrate.load(PACKAGE)


def _tables(connection: apsw.Connection) -> set[str]:
    return {
        row[0]
        for row in connection.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }


def _applied(connection: apsw.Connection, tables: set[str]) -> set[str]:
    if _TABLE not in tables:
        return set()
    return {row[0] for row in connection.execute(f"SELECT version FROM {_TABLE}")}


def refuse_foreign(
    connection: apsw.Connection, where: str, migrations: list[migrate.Migration]
) -> None:
    """Refuse a SQLite database that belongs to something else, before writing to it.

    Ours is empty (a new file), or records at least one of our migration versions (a
    database of an older or newer romancy_nb; user tables beside ours are fine). A
    ``schema_migrations`` table alone is what an interrupted first open of an old version
    left behind. Anything else is another application's data: not a single byte changes.
    """
    tables = _tables(connection)
    if not tables or tables == {_TABLE}:
        return
    if _applied(connection, tables) & {m.version for m in migrations}:
        return
    shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
    raise StoreError(
        f"{where} is a SQLite database of another application (tables: {shown}), not a "
        "romancy_nb database; it was left untouched. Point romancy_nb at a new file or at "
        "a romancy_nb database. To keep your own tables in the same file, let romancy_nb "
        "create it first (open an App on the new file), then add them.",
        path=where,
    )


def statements(sql: str) -> Iterator[str]:
    """The statements of ``sql``, one at a time (``apsw.complete`` finds where each ends,
    so a ``;`` inside a string, a comment or a trigger body does not split it)."""
    start = 0
    for semicolon in re.finditer(";", sql):
        chunk = sql[start : semicolon.end()]
        if apsw.complete(chunk):
            yield chunk.strip()
            start = semicolon.end()
    rest = sql[start:].strip()
    if rest:
        yield rest


def _run(connection: apsw.Connection, migration: migrate.Migration) -> None:
    for number, statement in enumerate(statements(migration.up), 1):
        try:
            for _ in connection.execute(statement):  # read every row: the statement ends
                pass
        except apsw.BusyError:
            raise
        except apsw.Error as error:
            first = statement.splitlines()[0] if statement else ""
            raise StoreError(
                f"migration {migration.version}_{migration.name} failed at statement "
                f"{number} ({first}...): {error}; nothing of it was applied.",
                version=migration.version,
            ) from error


def apply(connections: Connections, migrations: list[migrate.Migration]) -> list[str]:
    """Apply what is pending of ``migrations`` (see the module docstring); the versions."""
    connection = connections.open()
    try:
        applied = _applied(connection, _tables(connection))
        todo = migrate.pending(migrations, applied)
        if todo and connections.target.readonly is not None:
            raise StoreError(
                f"{connections.where} is open read-only ({connections.target.readonly}) "
                "and its schema is older than this romancy_nb "
                f"(pending: {', '.join(m.version for m in todo)}); open it once with write "
                "access to upgrade it.",
                path=connections.where,
            )
        return migrate.apply_all(migrations, applied, lambda m: _apply_one(connection, m))
    except apsw.Error as error:
        raise translate(error, connections.context(True)) from error
    finally:
        connection.close()


def _apply_one(connection: apsw.Connection, migration: migrate.Migration) -> bool:
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute(f"CREATE TABLE IF NOT EXISTS {_TABLE} (version TEXT PRIMARY KEY)")
        done = bool(
            connection.execute(
                f"SELECT 1 FROM {_TABLE} WHERE version = ?", (migration.version,)
            ).fetchall()
        )  # by another process, while we waited for the lock
        if not done:
            _run(connection, migration)
            connection.execute(f"INSERT INTO {_TABLE} (version) VALUES (?)", (migration.version,))
        connection.execute("COMMIT")
    except BaseException:
        rollback_quietly(connection)
        raise
    return not done


__all__ = ["PACKAGE", "apply", "refuse_foreign", "shipped", "statements"]
