"""User SQL for tests that run on every backend: write through ``ctx.session``, read back.

A transactional activity's ``ctx.session`` is the backend's own connection: APSW for
SQLite (``?`` placeholders), psycopg for PostgreSQL (``%s``). The tests write their SQL
once, with ``?``, and :func:`execute` adapts it. Ledger tables are created by
:func:`append_row` (or :func:`create_ledger`), which gives their rows an order on both
backends: SQLite's ``rowid``, and on PostgreSQL an identity column ``row_order`` at the end
(so ``INSERT ... VALUES`` without a column list still fills the test's own columns).
The backends' ``rows`` readers in ``tests/conftest.py`` read them back in that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import apsw

ROW_ORDER = "row_order"
"""PostgreSQL ledgers' hidden column: the order rows were written (SQLite has ``rowid``)."""

Row = tuple[Any, ...]


def is_postgres(connection: Any) -> bool:
    """Whether ``connection`` (a ``ctx.session``) is psycopg's rather than APSW's."""
    return type(connection).__module__.startswith("psycopg")


def execute(connection: Any, statement: str, params: Sequence[Any] = ()) -> Any:
    """Run ``statement``, written with ``?`` placeholders (no literal ``?`` in it), on
    either backend's connection; returns its cursor."""
    if is_postgres(connection):
        statement = statement.replace("?", "%s")
    return connection.execute(statement, params)


def create_ledger(connection: Any, table: str, columns: str) -> None:
    """``CREATE TABLE IF NOT EXISTS table (columns)`` with a row order on both backends.

    On PostgreSQL two transactions creating the same table at once collide in the catalog
    (a unique violation, not "already exists"): the first creator takes a transaction-level
    advisory lock, so the others wait for its commit and then find the table. Once the
    table exists this costs one lookup and no lock, so activities stay concurrent.
    """
    if not is_postgres(connection):
        connection.execute(f'CREATE TABLE IF NOT EXISTS "{table}" ({columns})')
        return
    if connection.execute("SELECT to_regclass(%s)", (f'"{table}"',)).fetchone()[0] is not None:
        return
    # The two-key form: never the key space of the store's own (one-key) advisory locks.
    connection.execute("SELECT pg_advisory_xact_lock(1, hashtext(%s))", (table,))
    connection.execute(
        f'CREATE TABLE IF NOT EXISTS "{table}" '
        f"({columns}, {ROW_ORDER} BIGINT GENERATED ALWAYS AS IDENTITY)"
    )


def append_row(connection: Any, table: str, columns: str, values: Sequence[Any]) -> None:
    """Create the ledger ``table`` if needed (see :func:`create_ledger`) and add one row."""
    create_ledger(connection, table, columns)
    marks = ", ".join("?" for _ in values)
    execute(connection, f'INSERT INTO "{table}" VALUES ({marks})', values)


def sqlite_rows(db: str | Path, table: str) -> list[Row]:
    """The rows of a user table of a SQLite file, in the order written (none if never
    created): the SQLite backend's ``rows`` in conftest."""
    connection = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    connection.set_busy_timeout(5000)
    try:
        if not connection.execute(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?", (table,)
        ).fetchall():
            return []
        return connection.execute(f'SELECT * FROM "{table}" ORDER BY rowid').fetchall()
    finally:
        connection.close()


def postgres_rows(url: str, table: str) -> list[Row]:
    """The rows of a ledger of a PostgreSQL database, in the order written, without the
    ``row_order`` column (none if never created): the PostgreSQL backend's ``rows``."""
    import psycopg  # only the PostgreSQL runs need it

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as connection:
        columns = [
            name
            for (name,) in connection.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = %s "
                "ORDER BY ordinal_position",
                (table,),
            )
        ]
        if not columns:
            return []
        if ROW_ORDER not in columns:
            raise AssertionError(
                f"table {table!r} has no {ROW_ORDER} column, so its rows have no order: "
                "create it with tests.sql.create_ledger / append_row"
            )
        listed = ", ".join(f'"{name}"' for name in columns if name != ROW_ORDER)
        return connection.execute(f'SELECT {listed} FROM "{table}" ORDER BY {ROW_ORDER}').fetchall()
