"""The PostgreSQL schema's migrations: dbmate files, applied once however many start at once.

Migrations run on a connection of their own, holding a session-level advisory lock (one
constant key) from before they read ``schema_migrations`` to after the last one commits:
when many workers start together, one applies what is pending and the others wait for the
lock, then find nothing left to do. Each migration is one transaction (PostgreSQL's DDL is
transactional): a statement that fails rolls the whole migration back and records nothing.
"""

from __future__ import annotations

import psycopg

from romancy_nb.errors import StoreError
from romancy_nb.store import migrate
from romancy_nb.store.postgres.connections import Connection, Connections
from romancy_nb.store.postgres.translate import translate

PACKAGE = "romancy_nb.store.postgres.migrations"
_TABLE = "schema_migrations"
_LOCK = 0x726F6D616E6379  # 'romancy': the advisory lock key of migrations


def shipped() -> list[migrate.Migration]:
    """The migrations this version of romancy_nb ships, oldest first."""
    return migrate.load(PACKAGE)


def _applied(connection: Connection) -> set[str]:
    if connection.execute("SELECT to_regclass(%s)", (_TABLE,)).fetchone() == (None,):
        return set()
    return {row[0] for row in connection.execute(f"SELECT version FROM {_TABLE}")}


def apply(connections: Connections, migrations: list[migrate.Migration]) -> list[str]:
    """Apply what is pending of ``migrations`` (see the module docstring); the versions."""
    connection = connections.connect()
    try:
        connection.execute("SELECT pg_advisory_lock(%s)", (_LOCK,))
        applied = _applied(connection)  # read under the lock: no one applies meanwhile
        return migrate.apply_all(migrations, applied, lambda m: _apply_one(connection, m))
    except psycopg.Error as error:
        raise translate(error, connections.where) from error
    finally:
        connection.close()  # ends the session, and so its advisory lock


def _apply_one(connection: Connection, migration: migrate.Migration) -> bool:
    with connection.transaction():
        connection.execute(f"CREATE TABLE IF NOT EXISTS {_TABLE} (version TEXT PRIMARY KEY)")
        try:
            # no parameters: the simple query protocol runs the file's statements in order
            connection.execute(migration.up.encode(), prepare=False)
        except psycopg.Error as error:
            if error.sqlstate is None or error.sqlstate.startswith("08"):
                raise  # the connection, not the migration
            raise StoreError(
                f"migration {migration.version}_{migration.name} failed: "
                f"{str(error).strip()}; nothing of it was applied.",
                version=migration.version,
            ) from error
        connection.execute(f"INSERT INTO {_TABLE} (version) VALUES (%s)", (migration.version,))
    return True


__all__ = ["PACKAGE", "apply", "shipped"]
