"""APSW errors turned into romancy_nb's, with a message that says what to do.

The engine retries a :class:`~romancy_nb.errors.StoreError` whose ``transient`` is true
(a lock, a full disk, an I/O error) and stops on any other, so the one question each
branch answers is: may the same call succeed later without anyone changing anything?
"""

from __future__ import annotations

from typing import NamedTuple

import apsw

from romancy_nb.errors import DatabaseLockedError, StoreError, StoreUnavailableError

NOT_A_DATABASE = (
    "{where} is not a SQLite database (or is encrypted or corrupt); "
    "point romancy_nb at a new file or at a romancy_nb database."
)


class Context(NamedTuple):
    """What a message needs to know about the connection that failed."""

    where: str
    """The database file (or ``:memory:``), named in every message."""
    waits: bool
    """Whether the connection waits for locks (its busy timeout) or fails at once."""
    readonly: str | None
    """Why the store is read-only (None when it is writable)."""


def needs_reopen(error: apsw.Error) -> bool:
    """Errors after which the connection itself may be unusable: reopen it.

    An I/O error can leave a connection wedged on a file whose locks or WAL index changed
    under it (the "disk I/O error" on every later statement after another SQLite library
    in the process closed the file); a fresh connection starts from the file as it is.
    A file that became read-only under a writable store (moved, deleted, remounted) is
    only seen again through a new ``open``.
    """
    return isinstance(error, apsw.IOError | apsw.ReadOnlyError)


def translate(error: apsw.Error, context: Context) -> StoreError:
    """The error of ours for ``error``; the caller raises it ``from error``."""
    where = context.where
    if isinstance(error, apsw.BusyError | apsw.LockedError):
        if context.waits:
            message = (
                f"{where} is locked by another writer and stayed locked past the busy "
                "timeout; another process holds a long write transaction. Retry, or raise "
                "App(busy_timeout=...)."
            )
        else:
            message = (
                f"{where} is locked by another writer; this connection does not wait for "
                "locks (wait_for_locks=False), the caller retries."
            )
        return DatabaseLockedError(message, path=where)
    if isinstance(error, apsw.ReadOnlyError) and context.readonly is not None:
        return StoreError(
            f"{where} is open read-only ({context.readonly}): listing works, writing does "
            "not. Open it from a user who may write the file (and its folder) to change it.",
            path=where,
        )
    if isinstance(error, apsw.FullError):
        return StoreUnavailableError(
            f"the disk holding {where} is full (or the database reached its size limit); "
            "writes resume once space is freed.",
            path=where,
        )
    if isinstance(error, apsw.IOError):
        return StoreUnavailableError(
            f"disk I/O error on {where} ({error}); the connection is reopened and the call "
            "may be retried. If it persists, check the disk and that no other SQLite "
            "library (Python's sqlite3 module) opens the same file in this process.",
            path=where,
        )
    if isinstance(error, apsw.ReadOnlyError):
        return StoreUnavailableError(
            f"{where} became read-only while in use ({error}): it was moved, deleted, or "
            "its file system remounted read-only; the connection is reopened.",
            path=where,
        )
    if isinstance(error, apsw.ConnectionClosedError):
        return StoreError(f"the store on {where} is closed", path=where)
    if isinstance(error, apsw.NotADBError):
        return StoreError(NOT_A_DATABASE.format(where=where), path=where)
    if isinstance(error, apsw.CantOpenError):
        return StoreError(
            f"cannot open the database {where}: check that it and its folder exist and are "
            "readable (and writable, to write).",
            path=where,
        )
    if isinstance(error, apsw.CorruptError):
        return StoreError(f"the database {where} is corrupt: {error}", path=where)
    return StoreError(f"database error on {where}: {error}", path=where)


__all__ = ["NOT_A_DATABASE", "Context", "needs_reopen", "translate"]
