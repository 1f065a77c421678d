"""Storage behind one protocol; backends are imported only when a URL asks for them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from romancy_nb.store.protocol import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    AttemptRecord,
    InstanceQuery,
    InstanceRecord,
    Session,
    StepRecord,
    Store,
    TableRows,
    WorkerRecord,
)

if TYPE_CHECKING:
    import apsw


def open_store(url: str | Path, **options: Any) -> Store:
    """Open the store a URL names: a file path, a ``file:`` URI or ``:memory:`` → SQLite.

    SQLite options: ``synchronous`` ("NORMAL"), ``busy_timeout`` (seconds, 5.0),
    ``wait_for_locks`` (True; False gives the engine's own connection a zero busy timeout,
    so a write meeting another writer raises ``DatabaseLockedError`` at once instead of
    waiting on the caller's thread) and ``readonly`` (False; also ``?mode=ro`` in a URI,
    and automatic for a file this user may not write).

    A ``postgresql://`` or ``postgres://`` URL → PostgreSQL (``pip install
    'romancy-nb[postgres]'``). Its options: ``min_size`` / ``max_size`` of the connection
    pool (1 / 16) and ``connect_timeout`` (seconds a call waits for a connection before
    raising ``StoreUnavailableError``, 5.0); the SQLite options above are accepted and
    ignored (the server owns durability and locking). Opening connects in the background:
    a server that is away fails the first call, not the open.
    """
    text = str(url)
    if is_server_url(text):
        try:
            from romancy_nb.store.postgres.store import PostgresStore
        except ModuleNotFoundError as error:
            if error.name not in ("psycopg", "psycopg_pool"):
                raise
            raise ModuleNotFoundError(
                f"{text.split('://')[0]}:// URLs need psycopg: pip install 'romancy-nb[postgres]'"
                f" ({error})"
            ) from error
        return PostgresStore(text, **options)
    if text.startswith("sqlite:///"):
        text = text.removeprefix("sqlite:///")
    from romancy_nb.store.sqlite.store import SqliteStore

    return SqliteStore(text, **options)


def is_server_url(url: str | Path) -> bool:
    """Whether ``url`` names a database server (PostgreSQL), not a SQLite file."""
    return str(url).startswith(("postgresql://", "postgres://"))


def display_url(url: str | Path) -> str:
    """``url`` as safe to print: a password in it is shown as ``***``."""
    text = str(url)
    if not is_server_url(text):
        return text
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(text)
    if parts.password is None:
        return text
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{netloc}"))


def connect(
    path: str | Path, *, readonly: bool = False, busy_timeout: float = 5.0
) -> apsw.Connection:
    """An APSW connection to the SQLite database at ``path``, set up like the store's.

    ``rn.connect``: for your own queries in a process where an App holds the file, instead
    of Python's ``sqlite3`` module (refused there: two SQLite libraries in one process can
    corrupt the file). See ``romancy_nb.store.sqlite.sharing.connect``.
    """
    from romancy_nb.store.sqlite.sharing import connect as connect_sqlite

    return connect_sqlite(path, readonly=readonly, busy_timeout=busy_timeout)


__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "AttemptRecord",
    "InstanceQuery",
    "InstanceRecord",
    "Session",
    "StepRecord",
    "Store",
    "TableRows",
    "WorkerRecord",
    "connect",
    "display_url",
    "is_server_url",
    "open_store",
]
