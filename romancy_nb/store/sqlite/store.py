"""The default store: one SQLite file through APSW.

Why APSW: it exposes SQLite as it is (no implicit transactions, a statement cache, the GIL
released during I/O), so a durable step is one ``INSERT`` in one implicit transaction —
tens of microseconds in WAL mode.

Connections: one for the engine's own writes (used from the event loop), one for the lease
heartbeat thread, and a small pool for transactional activities, whose ``ctx.session``
needs its own transaction. ``:memory:`` becomes a named ``memdb`` database so that all these
connections see the same data.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import apsw

from romancy_nb.errors import DatabaseLockedError, StoreError
from romancy_nb.store import migrate
from romancy_nb.store.protocol import (
    ACTIVE_STATUSES,
    AttemptRecord,
    InstanceQuery,
    InstanceRecord,
    StepRecord,
    WorkerRecord,
)
from romancy_nb.store.sqlite import pragmas
from romancy_nb.store.sqlite.waiting import WaitingStoreMixin

_INSTANCE_COLUMNS = (
    "instance_id, workflow_name, status, input, output, error, lock_owner, cancel_reason, "
    "code_version, created_at, updated_at"
)
_STEP_COLUMNS = (
    "instance_id, seq, step_id, kind, name, status, input, output, error, attempts, "
    "started_at, finished_at"
)
# One statement both checks the lease and writes the step, so a worker that lost its
# lease can never add history (and, inside a session, its user writes roll back with it).
_RECORD_STEP = (
    f"INSERT INTO workflow_history ({_STEP_COLUMNS}) "
    "SELECT ?,?,?,?,?,?,?,?,?,?,?,? WHERE EXISTS "
    "(SELECT 1 FROM workflow_instances WHERE instance_id = ? AND lock_owner = ?)"
)
_OPEN_FLAGS = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI


def _translate(error: apsw.Error, where: str) -> NoReturn:
    """Turn an APSW error into one of ours that says what to do about it."""
    if isinstance(error, apsw.BusyError | apsw.LockedError):
        raise DatabaseLockedError(
            f"{where} is locked by another writer and stayed locked past the busy timeout; "
            "another process holds a long write transaction. Retry, or raise "
            "App(busy_timeout=...).",
            path=where,
        ) from error
    if isinstance(error, apsw.NotADBError):
        raise StoreError(
            f"{where} is not a SQLite database (or is encrypted or corrupt); "
            "point romancy_nb at a new file or at a romancy_nb database.",
            path=where,
        ) from error
    if isinstance(error, apsw.CantOpenError):
        raise StoreError(
            f"cannot open the database {where}: check that its folder exists and is writable.",
            path=where,
        ) from error
    if isinstance(error, apsw.CorruptError):
        raise StoreError(f"the database {where} is corrupt: {error}", path=where) from error
    raise StoreError(f"database error on {where}: {error}", path=where) from error


_HEADER = b"SQLite format 3\x00"


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
        raise StoreError(
            f"{file} is not a SQLite database (or is encrypted or corrupt); "
            "point romancy_nb at a new file or at a romancy_nb database.",
            path=str(file),
        )


class SqliteSession:
    """A write transaction on a pooled connection, shared by user SQL and the step record."""

    def __init__(self, store: SqliteStore, connection: apsw.Connection) -> None:
        self._store = store
        self._connection = connection
        self._open = True

    @property
    def connection(self) -> apsw.Connection:
        return self._connection

    def record_step(self, step: StepRecord, owner: str) -> bool:
        try:
            self._connection.execute(_RECORD_STEP, (*step, step.instance_id, owner))
        except apsw.Error as error:
            _translate(error, self._store.where)
        return self._connection.changes() == 1

    def commit(self) -> None:
        self._finish("COMMIT")

    def rollback(self) -> None:
        self._finish("ROLLBACK")

    def _finish(self, statement: str) -> None:
        if not self._open:
            return
        self._open = False
        try:
            if not self._connection.in_transaction:
                return
            self._connection.execute(statement)
        except apsw.Error as error:
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
            _translate(error, self._store.where)
        finally:
            self._store._return_connection(self._connection)


def _json_path(dotted: str) -> str:
    """``customer.id`` → ``$."customer"."id"``; quoting keeps any key a plain key."""
    keys = dotted.split(".")
    if not dotted or any(not key for key in keys):
        raise ValueError(f"invalid input path {dotted!r}: use dot-separated keys like 'a.b'")
    return "$" + "".join('."' + key.replace('"', '""') + '"' for key in keys)


def _json_type_of(value: Any) -> tuple[str, ...]:
    if value is None:
        return ("null",)
    if value is True:
        return ("true",)
    if value is False:
        return ("false",)
    if isinstance(value, int | float):
        return ("integer", "real")
    if isinstance(value, str):
        return ("text",)
    raise TypeError(
        f"find_instances matches strings, numbers, booleans and None, not {type(value).__name__}"
    )


class SqliteStore(WaitingStoreMixin):
    """:class:`~romancy_nb.store.protocol.Store` on an APSW SQLite database."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: pragmas.Synchronous = "NORMAL",
        busy_timeout: float = 5.0,
    ) -> None:
        path = str(path)
        self.url = path
        self._synchronous = synchronous
        self._busy_ms = int(busy_timeout * 1000)
        if path == ":memory:":
            self._filename = f"file:/romancy-{uuid.uuid4().hex}?vfs=memdb"
            self.where = ":memory:"
        else:
            file = Path(path).expanduser()
            if not file.parent.is_dir():
                raise StoreError(
                    f"cannot create the database {file}: the folder {file.parent} does not "
                    "exist. Create it first, or choose another path.",
                    path=str(file),
                )
            self._filename = str(file.resolve())
            self.where = self._filename
            _refuse_non_database(file)
        self._pool: list[apsw.Connection] = []
        self._pool_lock = threading.Lock()
        self._closed = False
        self._db = self._connect()

    # connections

    def _connect(self) -> apsw.Connection:
        try:
            connection = apsw.Connection(self._filename, flags=_OPEN_FLAGS)
            pragmas.recommended(connection, self._synchronous, self._busy_ms)
            # Touch the schema so "not a database" surfaces here, not mid-workflow.
            connection.execute("SELECT count(*) FROM sqlite_schema").fetchall()
        except apsw.Error as error:
            _translate(error, self.where)
        return connection

    @property
    def connection(self) -> apsw.Connection:
        """The engine's connection (for views and diagnostics; the engine writes no SQL)."""
        return self._db

    def connect(self) -> apsw.Connection:
        """A new connection with the store's settings, for a thread of its own."""
        return self._connect()

    def _take_connection(self) -> apsw.Connection:
        with self._pool_lock:
            if self._pool:
                return self._pool.pop()
        return self._connect()

    def _return_connection(self, connection: apsw.Connection) -> None:
        with self._pool_lock:
            if self._closed or len(self._pool) >= 8:
                connection.close()
            else:
                self._pool.append(connection)

    def effective_settings(self) -> dict[str, Any]:
        return pragmas.effective(self._db)

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            pool, self._pool = self._pool, []
        for connection in pool:
            connection.close()
        self._db.close()

    def _run(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, args).fetchall()
        except apsw.Error as error:
            _translate(error, self.where)

    def _write(self, sql: str, args: Sequence[Any] = ()) -> int:
        try:
            self._db.execute(sql, args)
        except apsw.Error as error:
            _translate(error, self.where)
        return self._db.changes()

    # migrations

    def migrate(self) -> list[str]:
        self._write("CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY)")
        applied = {row[0] for row in self._run("SELECT version FROM schema_migrations")}

        def apply_one(migration: migrate.Migration) -> None:
            try:
                with self._db:  # one transaction: the schema and its version row together
                    if self._db.execute(
                        "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
                    ).fetchall():
                        return  # another process applied it while we waited for the lock
                    self._db.execute(migration.up)
                    self._db.execute(
                        "INSERT INTO schema_migrations (version) VALUES (?)",
                        (migration.version,),
                    )
            except apsw.Error as error:
                _translate(error, self.where)

        return migrate.apply_all(
            migrate.load("romancy_nb.store.sqlite.migrations"), applied, apply_one
        )

    # workers

    def register_worker(self, worker: WorkerRecord) -> None:
        self._write(
            "INSERT OR REPLACE INTO workers (worker_id, host, pid, proc_start, started_at, "
            "heartbeat_at) VALUES (?,?,?,?,?,?)",
            (
                worker.worker_id,
                worker.host,
                worker.pid,
                worker.proc_start,
                worker.started_at,
                worker.heartbeat_at,
            ),
        )

    def heartbeat(self, worker_id: str, now: float) -> None:
        self._write("UPDATE workers SET heartbeat_at = ? WHERE worker_id = ?", (now, worker_id))

    def list_workers(self) -> list[WorkerRecord]:
        rows = self._run(
            "SELECT worker_id, host, pid, proc_start, started_at, heartbeat_at FROM workers"
        )
        return [WorkerRecord(*row) for row in rows]

    def remove_worker(self, worker_id: str) -> None:
        self._write("DELETE FROM workers WHERE worker_id = ?", (worker_id,))

    # instances

    def create_instance(self, instance: InstanceRecord) -> bool:
        changed = self._write(
            f"INSERT OR IGNORE INTO workflow_instances ({_INSTANCE_COLUMNS}) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                instance.instance_id,
                instance.workflow_name,
                instance.status,
                instance.input,
                instance.output,
                instance.error,
                instance.lock_owner,
                instance.cancel_reason,
                instance.code_version,
                instance.created_at,
                instance.updated_at,
            ),
        )
        return changed == 1

    def get_instance(self, instance_id: str) -> InstanceRecord | None:
        rows = self._run(
            f"SELECT {_INSTANCE_COLUMNS} FROM workflow_instances WHERE instance_id = ?",
            (instance_id,),
        )
        return InstanceRecord(*rows[0]) if rows else None

    def list_instances(self, query: InstanceQuery) -> list[InstanceRecord]:
        where: list[str] = []
        args: list[Any] = []
        if query.workflow is not None:
            where.append("workflow_name = ?")
            args.append(query.workflow)
        if query.status is not None:
            where.append("status = ?")
            args.append(query.status)
        if query.instance_id is not None:
            where.append("instance_id = ?")
            args.append(query.instance_id)
        for dotted, value in (query.input_equals or {}).items():
            path = _json_path(dotted)
            types = _json_type_of(value)
            marks = ",".join("?" * len(types))
            where.append(f"json_type(input, ?) IN ({marks})")
            args.extend((path, *types))
            if value is not None and not isinstance(value, bool):
                where.append("json_extract(input, ?) = ?")
                args.extend((path, value))
        if query.after is not None:
            where.append("(created_at, instance_id) < (?, ?)")
            args.extend(query.after)
        sql = f"SELECT {_INSTANCE_COLUMNS} FROM workflow_instances"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, instance_id DESC LIMIT ?"
        args.append(query.limit)
        return [InstanceRecord(*row) for row in self._run(sql, args)]

    def find_orphans(self, live_workers: Sequence[str]) -> list[InstanceRecord]:
        statuses = ",".join("?" * len(ACTIVE_STATUSES))
        rows = self._run(
            f"SELECT {_INSTANCE_COLUMNS} FROM workflow_instances WHERE status IN ({statuses}) "
            "ORDER BY created_at",
            ACTIVE_STATUSES,
        )
        live = set(live_workers)
        return [InstanceRecord(*row) for row in rows if row[6] not in live]

    def claim_instance(self, instance_id: str, owner: str, previous: str | None) -> bool:
        return (
            self._write(
                "UPDATE workflow_instances SET lock_owner = ? "
                "WHERE instance_id = ? AND lock_owner IS ?",
                (owner, instance_id, previous),
            )
            == 1
        )

    def set_status(
        self, instance_id: str, owner: str, status: str, error: str | None = None
    ) -> bool:
        return (
            self._write(
                "UPDATE workflow_instances SET status = ?, error = coalesce(?, error), "
                "updated_at = unixepoch('subsec') WHERE instance_id = ? AND lock_owner = ?",
                (status, error, instance_id, owner),
            )
            == 1
        )

    def finish_instance(
        self,
        instance_id: str,
        owner: str,
        status: str,
        output: str | None,
        error: str | None,
    ) -> bool:
        return (
            self._write(
                "UPDATE workflow_instances SET status = ?, output = ?, error = coalesce(?, error), "
                "lock_owner = NULL, updated_at = unixepoch('subsec') "
                "WHERE instance_id = ? AND lock_owner = ?",
                (status, output, error, instance_id, owner),
            )
            == 1
        )

    def release_instance(self, instance_id: str, owner: str) -> None:
        self._write(
            "UPDATE workflow_instances SET lock_owner = NULL "
            "WHERE instance_id = ? AND lock_owner = ?",
            (instance_id, owner),
        )

    def request_cancel(self, instance_id: str, reason: str) -> None:
        self._write(
            "UPDATE workflow_instances SET cancel_reason = ? "
            "WHERE instance_id = ? AND cancel_reason IS NULL",
            (reason, instance_id),
        )

    def cancel_requests(self, owner: str) -> list[tuple[str, str]]:
        return [
            (row[0], row[1])
            for row in self._run(
                "SELECT instance_id, cancel_reason FROM workflow_instances "
                "WHERE lock_owner = ? AND cancel_reason IS NOT NULL AND status = 'running'",
                (owner,),
            )
        ]

    # history

    def load_history(self, instance_id: str) -> list[StepRecord]:
        rows = self._run(
            f"SELECT {_STEP_COLUMNS} FROM workflow_history WHERE instance_id = ? ORDER BY seq",
            (instance_id,),
        )
        return [StepRecord(*row) for row in rows]

    def load_attempts(self, instance_id: str) -> list[AttemptRecord]:
        rows = self._run(
            "SELECT instance_id, step_id, attempt, error, at FROM step_attempts "
            "WHERE instance_id = ? ORDER BY step_id, attempt",
            (instance_id,),
        )
        return [AttemptRecord(*row) for row in rows]

    def record_step(self, step: StepRecord, owner: str) -> bool:
        try:
            self._db.execute(_RECORD_STEP, (*step, step.instance_id, owner))
        except apsw.Error as error:
            _translate(error, self.where)
        return self._db.changes() == 1

    def record_steps(self, steps: Sequence[StepRecord], owner: str) -> list[bool]:
        results = []
        try:
            with self._db:
                for step in steps:
                    self._db.execute(_RECORD_STEP, (*step, step.instance_id, owner))
                    results.append(self._db.changes() == 1)
        except apsw.Error as error:
            _translate(error, self.where)
        return results

    def record_attempt(self, attempt: AttemptRecord) -> None:
        self._write(
            "INSERT OR REPLACE INTO step_attempts (instance_id, step_id, attempt, error, at) "
            "VALUES (?,?,?,?,?)",
            (attempt.instance_id, attempt.step_id, attempt.attempt, attempt.error, attempt.at),
        )

    def open_session(self) -> SqliteSession:
        connection = self._take_connection()
        try:
            connection.execute("BEGIN IMMEDIATE")
        except apsw.Error as error:
            self._return_connection(connection)
            _translate(error, self.where)
        return SqliteSession(self, connection)

    # diagnostics used by tests and the CLI

    def table_counts(self) -> dict[str, int]:
        tables = [
            row[0]
            for row in self._run(
                "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name"
            )
        ]
        return {t: self._run(f'SELECT count(*) FROM "{t}"')[0][0] for t in tables}

    def read_table(
        self, name: str, where: dict[str, Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]] | None:
        """(column names, rows) of a whole table, for notebook views and exports.

        ``where`` keeps rows whose columns equal the given values. None if there is no
        such table (a feature whose migration has not run yet).
        """
        columns = [row[1] for row in self._run("SELECT * FROM pragma_table_info(?)", (name,))]
        if not columns:
            return None
        where = where or {}
        unknown = set(where) - set(columns)
        if unknown:
            raise ValueError(f"table {name!r} has no column(s) {sorted(unknown)}")
        # Table and column names were checked against the schema above.
        sql = f'SELECT * FROM "{name}"'
        if where:
            sql += " WHERE " + " AND ".join(f'"{column}" = ?' for column in where)
        return columns, self._run(sql, list(where.values()))


__all__ = ["SqliteSession", "SqliteStore"]
