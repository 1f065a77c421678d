"""Where the database is and the store's connections to it.

:func:`resolve` turns what the user gave (a path, ``:memory:``, a ``file:`` URI) into a
:class:`Target`: the URI SQLite opens, the file, and whether (and why) it is read-only.
:class:`Connections` holds the connections of one store:

- ``db``, the engine's own, used from the event loop. With ``wait_for_locks=False`` its
  busy timeout is 0: a write that meets another writer fails at once with
  ``DatabaseLockedError`` and the engine awaits and retries, instead of SQLite sleeping on
  the loop thread. After an I/O error it is reopened (see :meth:`Connections.fail`).
- a pool for sessions (``ctx.session``, worker threads), a dedicated connection for the
  lease heartbeat, and one-off connections (migrations, the watcher, sweeps): all keep the
  busy timeout, since they run on threads or once at open.

Read-only: with ``readonly=True``, ``?mode=ro`` in a URI, or a file this user may not write
(``os.access``; or a folder it may not write, where no ``-wal`` file exists for it to write
into), the store opens with ``SQLITE_OPEN_READONLY``: lists and views work, a write raises
a clear ``StoreError``, and migrations only check that the schema is current. If the folder
is not writable and no ``-shm`` file exists, nobody can be writing the database in WAL mode
(a writer needs its ``-wal`` and ``-shm`` files there), so it is opened ``immutable=1``, the
only way SQLite reads a WAL database whose folder it cannot write
(https://sqlite.org/wal.html#readonly). Root passes every ``os.access`` check: it asks with
``readonly=True`` (the tests also run a process as root without ``CAP_DAC_OVERRIDE``, which
makes file modes apply to it).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import apsw

from romancy_nb.errors import StoreError
from romancy_nb.store.sqlite import pragmas
from romancy_nb.store.sqlite.translate import NOT_A_DATABASE, Context, needs_reopen, translate

_HEADER = b"SQLite format 3\x00"
_POOL_SIZE = 8


@dataclass(frozen=True)
class Target:
    """A database to open: ``filename`` is the URI given to SQLite."""

    filename: str
    where: str
    """The resolved file path (or ``:memory:``), named in messages and in the registry."""
    file: Path | None
    """The database file; None for ``:memory:``."""
    readonly: str | None
    """Why the store is read-only; None when it may write."""


def resolve(url: str, *, readonly: bool = False) -> Target:
    """The :class:`Target` for a path, ``:memory:`` or ``file:`` URI; checks it first.

    A missing folder, a file that is not SQLite, or a read-only request for a missing file
    are refused here, before SQLite can create or touch anything.
    """
    if url == ":memory:":  # a named memdb, so that every connection sees the same data
        return Target(f"file:/romancy-{uuid.uuid4().hex}?vfs=memdb", ":memory:", None, None)
    params: list[tuple[str, str]] = []
    path = url
    if url.startswith("file:"):
        parts = urlsplit(url)
        path = unquote(parts.path)
        params = parse_qsl(parts.query)
        mode = dict(params).get("mode")
        readonly = readonly or mode == "ro"
        params = [(key, value) for key, value in params if key != "mode"]
    file = Path(path).expanduser()
    if not file.parent.is_dir():
        raise StoreError(
            f"cannot create the database {file}: the folder {file.parent} does not "
            "exist. Create it first, or choose another path.",
            path=str(file),
        )
    file = file.resolve()
    where = str(file)
    _refuse_non_database(file)
    why = _readonly_reason(file, readonly)
    if why is not None:
        if not file.exists():
            raise StoreError(f"no database at {file} to open read-only", path=where)
        params.append(("mode", "ro"))
        if not os.access(file.parent, os.W_OK) and not Path(f"{file}-shm").exists():
            params.append(("immutable", "1"))
    query = f"?{urlencode(params)}" if params else ""
    return Target(f"file:{quote(where)}{query}", where, file, why)


def _readonly_reason(file: Path, asked: bool) -> str | None:
    """Why the store must open ``file`` read-only; None if it may write it."""
    if asked:
        return "opened with readonly=True"
    if not file.exists():
        return None
    if not os.access(file, os.W_OK):
        return "this user may not write the file"
    if not os.access(file.parent, os.W_OK) and not Path(f"{file}-wal").exists():
        return "this user may not write its folder, where SQLite keeps its -wal and -shm files"
    return None


def _refuse_non_database(file: Path) -> None:
    """Refuse an existing file that is not SQLite before SQLite can touch it.

    SQLite itself rejects most such files, but takes a 1-byte file for an empty database
    and would overwrite it; checking the header first leaves every foreign file untouched.
    """
    try:
        with file.open("rb") as handle:
            head = handle.read(len(_HEADER))
    except FileNotFoundError:
        return
    except OSError as error:
        raise StoreError(f"cannot read the database {file}: {error}", path=str(file)) from error
    if head and head != _HEADER:
        raise StoreError(NOT_A_DATABASE.format(where=file), path=str(file))


def close_quietly(connection: apsw.Connection) -> None:
    """Close a connection that may be broken; its errors are no news any more."""
    with suppress(apsw.Error):
        connection.close(True)


def rollback_quietly(connection: apsw.Connection) -> None:
    """Roll back if a transaction is open; an error here must not hide the first one."""
    try:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
    except apsw.Error:
        pass


class Connections:
    """The connections of one store, opened with its settings; see the module docstring.

    ``inspect`` runs on the first connection before any setting is written to the file
    (``journal_mode=WAL`` rewrites its header), so a foreign database can be refused
    untouched.
    """

    def __init__(
        self,
        target: Target,
        *,
        synchronous: pragmas.Synchronous,
        busy_ms: int,
        wait_for_locks: bool,
        inspect: Callable[[apsw.Connection], None],
    ) -> None:
        self.target = target
        self._synchronous = synchronous
        self._busy_ms = busy_ms
        self.wait_for_locks = wait_for_locks
        self._pool: list[apsw.Connection] = []
        self._generation = 0  # bumped on reopen: connections of older ones are not pooled
        self._lock = threading.Lock()
        self._heartbeat: apsw.Connection | None = None
        self._heartbeat_lock = threading.Lock()
        self._dead: StoreError | None = None
        self._closed = False
        self.db = self.open(waits=wait_for_locks, create=True, inspect=inspect)

    @property
    def where(self) -> str:
        return self.target.where

    def context(self, waits: bool) -> Context:
        return Context(self.target.where, waits, self.target.readonly)

    # opening

    @property
    def busy_ms(self) -> int:
        """How long a connection that waits for locks waits, in milliseconds."""
        return self._busy_ms

    def open(
        self,
        *,
        waits: bool = True,
        create: bool = False,
        inspect: Callable[[apsw.Connection], None] | None = None,
    ) -> apsw.Connection:
        """A new connection with the store's settings (busy timeout 0 unless ``waits``)."""
        if self.target.readonly is not None:
            flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
        else:
            flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_URI
            if create:
                flags |= apsw.SQLITE_OPEN_CREATE
        try:
            connection = apsw.Connection(self.target.filename, flags=flags)
            try:
                pragmas.busy_timeout(connection, self._busy_ms)
                if inspect is not None:
                    inspect(connection)
                self._setup(connection)
                if not waits:
                    pragmas.busy_timeout(connection, 0)
            except BaseException:
                close_quietly(connection)
                raise
        except apsw.Error as error:
            raise translate(error, self.context(True)) from error
        return connection

    def _setup(self, connection: apsw.Connection) -> None:
        # Processes opening a new file together race to switch it to WAL, which needs an
        # exclusive lock that SQLite does not wait for: retry within the busy timeout.
        deadline = time.monotonic() + self._busy_ms / 1000
        while True:
            try:
                pragmas.recommended(
                    connection,
                    self._synchronous,
                    self._busy_ms,
                    wal=self.target.readonly is None,
                )
                return
            except apsw.BusyError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.005)

    # statements on the engine connection

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.db.execute(sql, args).fetchall()
        except apsw.Error as error:
            self.fail(error)

    def write(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement in its own transaction; how many rows it changed."""
        db = self.db
        try:
            db.execute(sql, args)
            return db.changes()
        except apsw.Error as error:
            self.fail(error)

    @contextmanager
    def immediate(self) -> Iterator[apsw.Connection]:
        """One write transaction on the engine connection; rolled back on any error.

        ``BEGIN IMMEDIATE``, not a deferred transaction: one that reads first and writes
        later fails at once with ``SQLITE_BUSY`` when another process wrote in between;
        taking the write lock up front lets the busy timeout (or the caller's retry) work.
        """
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
        except apsw.Error as error:
            self.fail(error)
        try:
            yield db
            db.execute("COMMIT")
        except BaseException as error:
            rollback_quietly(db)
            if isinstance(error, apsw.Error):
                self.fail(error)
            raise

    # the engine connection's errors

    def fail(self, error: apsw.Error) -> NoReturn:
        """Raise ours for an error of the engine connection, reopening it if it needs it.

        A reopen that fails for good (the file is gone, no longer a database) leaves the
        store dead: this and every later call raise one clear error, never a loop of I/O
        errors. A reopen that meets a transient fault is tried again at the next failure.
        """
        if self._dead is not None and isinstance(error, apsw.ConnectionClosedError):
            raise self._dead from error
        ours = translate(error, self.context(self.wait_for_locks))
        if needs_reopen(error) and self.target.file is not None and not self._closed:
            self._reopen(ours)
        raise ours from error

    def _reopen(self, cause: StoreError) -> None:
        self._drop_pool()
        with self._lock:
            try:
                fresh = self.open(waits=self.wait_for_locks)
            except StoreError as error:
                if error.transient:
                    return
                self._dead = StoreError(
                    f"{self.where} cannot be reopened after an error ({cause}): {error}",
                    path=self.where,
                )
                close_quietly(self.db)
                raise self._dead from error
            old, self.db = self.db, fresh
        close_quietly(old)

    def fail_other(self, error: apsw.Error, connection: apsw.Connection) -> NoReturn:
        """Raise ours for an error of a session, heartbeat or one-off connection.

        A connection that may be broken is closed (never pooled again), and so is the pool.
        """
        if needs_reopen(error):
            close_quietly(connection)
            self._drop_pool()
        raise translate(error, self.context(True)) from error

    # the session pool

    def take(self) -> tuple[apsw.Connection, int]:
        """A pooled connection and its generation (hand both back to :meth:`give_back`)."""
        with self._lock:
            generation = self._generation
            if self._pool:
                return self._pool.pop(), generation
        return self.open(), generation

    def give_back(self, connection: apsw.Connection, generation: int) -> None:
        with self._lock:
            keep = (
                not self._closed and generation == self._generation and len(self._pool) < _POOL_SIZE
            )
            if keep:
                self._pool.append(connection)
                return
        close_quietly(connection)

    def _drop_pool(self) -> None:
        with self._lock:
            self._generation += 1
            pool, self._pool = self._pool, []
        for connection in pool:
            close_quietly(connection)

    # the heartbeat connection

    def write_beside(self, sql: str, args: Sequence[Any]) -> int:
        """Run one write on the heartbeat's own connection (busy timeout kept)."""
        with self._heartbeat_lock:
            connection = self._heartbeat
            if connection is None:
                connection = self._heartbeat = self.open()
            try:
                connection.execute(sql, args)
                return connection.changes()
            except apsw.Error as error:
                if needs_reopen(error):
                    self._heartbeat = None
                self.fail_other(error, connection)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._drop_pool()
        with self._heartbeat_lock:
            if self._heartbeat is not None:
                close_quietly(self._heartbeat)
                self._heartbeat = None
        self.db.close()


__all__ = [
    "Connections",
    "Target",
    "close_quietly",
    "resolve",
    "rollback_quietly",
]
