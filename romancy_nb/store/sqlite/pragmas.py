"""SQLite connection settings, one small function each, saying why.

APSW runs a multi-statement string lazily, so each pragma is its own ``execute`` call and
:func:`effective` reads the settings back so tests can check what really took effect.
"""

from __future__ import annotations

from typing import Any, Literal

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


def _pragma(connection: Any, statement: str) -> None:
    # Iterate so a pragma that returns rows (journal_mode does) is fully run.
    for _ in connection.execute(statement):
        pass


def journal_wal(connection: Any) -> None:
    """WAL lets readers run beside the one writer and makes a commit one append.

    https://sqlite.org/wal.html — an in-memory database keeps its own journal mode.
    """
    _pragma(connection, "PRAGMA journal_mode=WAL")


def synchronous(connection: Any, level: Synchronous) -> None:
    """NORMAL survives any process crash in WAL mode; FULL also survives power loss.

    https://sqlite.org/pragma.html#pragma_synchronous — NORMAL skips the fsync per commit
    (≈ 20–30 µs a commit instead of ≈ 150 µs), which is the default durability of
    romancy_nb; FULL is offered for machines where power loss must not lose a step.
    """
    _pragma(connection, f"PRAGMA synchronous={level}")


def busy_timeout(connection: Any, milliseconds: int) -> None:
    """Wait this long for another writer instead of failing at once with SQLITE_BUSY.

    Several worker processes, and the lease heartbeat thread, share one file; a short wait
    is normal, so the default is generous (seconds), and a longer one becomes
    ``DatabaseLockedError`` naming the file.
    """
    _pragma(connection, f"PRAGMA busy_timeout={int(milliseconds)}")


def temp_store_memory(connection: Any) -> None:
    """Sorts and temporary indexes for queries stay in memory, never in a temp file."""
    _pragma(connection, "PRAGMA temp_store=MEMORY")


def foreign_keys(connection: Any) -> None:
    """Enforce foreign keys (off by default in SQLite for backwards compatibility)."""
    _pragma(connection, "PRAGMA foreign_keys=ON")


def recommended(connection: Any, level: Synchronous, busy_ms: int, *, wal: bool = True) -> None:
    """Apply every setting above to a fresh connection.

    ``wal=False`` for a read-only connection: it cannot switch the journal mode, and a
    romancy_nb database is in WAL mode already (the mode is stored in the file).
    """
    busy_timeout(connection, busy_ms)
    if wal:
        journal_wal(connection)
    synchronous(connection, level)
    temp_store_memory(connection)
    foreign_keys(connection)


_SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def effective(connection: Any) -> dict[str, Any]:
    """Read back the settings in force, for tests and ``romancy-nb`` diagnostics."""

    def one(name: str) -> Any:
        return next(iter(connection.execute(f"PRAGMA {name}")))[0]

    return {
        "journal_mode": one("journal_mode"),
        "synchronous": _SYNC_NAMES.get(one("synchronous"), "?"),
        "busy_timeout": one("busy_timeout"),
        "temp_store": one("temp_store"),
        "foreign_keys": one("foreign_keys"),
    }
