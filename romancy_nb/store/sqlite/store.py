"""The default store: one SQLite file through APSW.

Why APSW: it exposes SQLite as it is (no implicit transactions, a statement cache, the GIL
released during I/O), so a durable step is one ``INSERT`` in one implicit transaction —
tens of microseconds in WAL mode.

Where to find the rest: ``connections.py`` (opening, read-only files, the engine connection
and the session pool, reopening after an I/O error), ``translate.py`` (which errors are
transient), ``schema.py`` (recognising our database, migrations), ``waiting.py`` (timers,
channels, events, groups, recur), ``outbox.py`` (the transactional outbox) and
``sharing.py`` (the file and Python's ``sqlite3``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import apsw

from romancy_nb.store.protocol import (
    ACTIVE_STATUSES,
    AttemptRecord,
    HistoryCut,
    InstanceQuery,
    InstanceRecord,
    OutboxEvent,
    OutboxOutcome,
    OutboxRecord,
    StepRecord,
    TableRows,
    WorkerRecord,
)
from romancy_nb.store.sqlite import outbox, pragmas, schema, sharing
from romancy_nb.store.sqlite.connections import Connections, resolve, rollback_quietly
from romancy_nb.store.sqlite.leaders import Leaders
from romancy_nb.store.sqlite.travel import HistoryEdits
from romancy_nb.store.sqlite.waiting import WaitingQueries

_INSTANCE_COLUMNS = (
    "instance_id, workflow_name, status, input, output, error, lock_owner, cancel_reason, "
    "code_version, created_at, updated_at, forked_from, forked_at"
)
_INSERT_INSTANCE = (
    f"INSERT OR IGNORE INTO workflow_instances ({_INSTANCE_COLUMNS}) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
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


class SqliteSession:
    """A write transaction on a pooled connection, shared by user SQL and the step record."""

    def __init__(self, connections: Connections, connection: apsw.Connection, generation: int):
        self._c = connections
        self._connection = connection
        self._generation = generation
        self._open = True

    @property
    def connection(self) -> apsw.Connection:
        return self._connection

    def record_step(self, step: StepRecord, owner: str, events: Sequence[OutboxEvent] = ()) -> bool:
        connection = self._connection
        try:
            connection.execute(_RECORD_STEP, (*step, step.instance_id, owner))
            recorded = connection.changes() == 1
            if recorded and events:
                outbox.insert(connection, events)
        except apsw.Error as error:
            self._c.fail_other(error, connection)
        return recorded

    def commit(self) -> None:
        self._finish("COMMIT")

    def rollback(self) -> None:
        self._finish("ROLLBACK")

    def _finish(self, statement: str) -> None:
        if not self._open:
            return
        self._open = False
        connection = self._connection
        try:
            if connection.in_transaction:
                connection.execute(statement)
        except apsw.Error as error:
            rollback_quietly(connection)
            self._c.fail_other(error, connection)
        finally:
            self._c.give_back(connection, self._generation)


_INT64 = range(-(2**63), 2**63)


def _json_path(dotted: Any) -> str:
    """``customer.id`` → ``$."customer"."id"``: every key quoted, so any key is a plain key.

    In a quoted label SQLite ends the key at the next ``"`` but decodes JSON escapes in it,
    so ``"`` and ``\\`` are written as escapes.
    """
    if not isinstance(dotted, str):
        raise TypeError(
            f"find_instances keys are dot paths (str) like 'order.customer.id', not "
            f"{dotted!r} ({type(dotted).__name__})"
        )
    keys = dotted.split(".")
    if not dotted or any(not key for key in keys):
        raise ValueError(f"invalid input path {dotted!r}: use dot-separated keys like 'a.b'")
    return "$" + "".join(
        '."' + key.replace("\\", "\\\\").replace('"', "\\u0022") + '"' for key in keys
    )


def _match_input(dotted: Any, value: Any) -> tuple[str, list[Any]]:
    """The condition (and its arguments) that the stored input has ``value`` at ``dotted``."""
    path = _json_path(dotted)
    if value is None:
        return "json_type(input, ?) = 'null'", [path]
    if isinstance(value, bool):
        return "json_type(input, ?) = ?", [path, "true" if value else "false"]
    if isinstance(value, str):
        return "json_type(input, ?) = 'text' AND json_extract(input, ?) = ?", [path, path, value]
    if isinstance(value, int) and value not in _INT64:
        # beyond SQLite's integers: json_extract gives a rounded REAL; compare the JSON text
        return "json_type(input, ?) = 'integer' AND input -> ? = ?", [path, path, str(value)]
    if isinstance(value, int | float):
        return (
            "json_type(input, ?) IN ('integer', 'real') AND json_extract(input, ?) = ?",
            [path, path, value],
        )
    raise TypeError(
        f"find_instances matches strings, numbers, booleans and None, not "
        f"{type(value).__name__} (at {dotted!r})"
    )


class SqliteStore(WaitingQueries):
    """:class:`~romancy_nb.store.protocol.Store` on an APSW SQLite database.

    ``wait_for_locks=False`` gives the engine's connection a zero busy timeout (the engine
    retries a ``DatabaseLockedError`` itself, without blocking its event loop); sessions,
    the heartbeat, migrations and the watcher keep ``busy_timeout``. ``readonly=True``
    opens the file read-only (see ``connections.py``).
    """

    inline = True  # a WAL commit costs tens of microseconds: call it on the event loop

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: pragmas.Synchronous = "NORMAL",
        busy_timeout: float = 5.0,
        wait_for_locks: bool = True,
        readonly: bool = False,
    ) -> None:
        self.url = str(path)
        target = resolve(self.url, readonly=readonly)
        self._migrations = schema.shipped()
        self._c = Connections(
            target,
            synchronous=synchronous,
            busy_ms=int(busy_timeout * 1000),
            wait_for_locks=wait_for_locks,
            inspect=lambda c: schema.refuse_foreign(c, target.where, self._migrations),
        )
        super().__init__(self._c)
        self._edits = HistoryEdits(self._c)
        self._leaders = Leaders(self._c)
        self._outbox = outbox.OutboxQueries(self._c)
        self.where = target.where
        self._held = target.file is not None
        if self._held:
            sharing.hold(self.where)

    # connections

    @property
    def connection(self) -> apsw.Connection:
        """The engine's connection (SQLite diagnostics and tests; not part of the protocol)."""
        return self._c.db

    @property
    def readonly(self) -> str | None:
        """Why the store is read-only, or None when it may write."""
        return self._c.target.readonly

    @property
    def wait_for_locks(self) -> bool:
        return self._c.wait_for_locks

    def connect(self) -> apsw.Connection:
        """A new connection with the store's settings (and busy timeout), for a thread."""
        return self._c.open()

    def effective_settings(self) -> dict[str, Any]:
        """The settings in force on the engine connection (tests, diagnostics)."""
        return pragmas.effective(self._c.db)

    def close(self) -> None:
        if self._held:
            self._held = False
            sharing.release(self.where)
        self._c.close()

    # migrations

    def migrate(self) -> list[str]:
        return schema.apply(self._c, self._migrations)

    # workers

    def register_worker(self, worker: WorkerRecord) -> None:
        self._c.write(
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
        # its own connection, which waits for locks: the heartbeat runs beside the engine
        self._c.write_beside(
            "UPDATE workers SET heartbeat_at = ? WHERE worker_id = ?", (now, worker_id)
        )

    def list_workers(self) -> list[WorkerRecord]:
        rows = self._c.rows(
            "SELECT worker_id, host, pid, proc_start, started_at, heartbeat_at FROM workers"
        )
        return [WorkerRecord(*row) for row in rows]

    def remove_worker(self, worker_id: str) -> None:
        self._c.write("DELETE FROM workers WHERE worker_id = ?", (worker_id,))

    def lead(self, role: str, worker_id: str, now: float, ttl: float) -> bool:
        return self._leaders.lead(role, worker_id, now, ttl)

    def resign(self, role: str, worker_id: str) -> None:
        self._leaders.resign(role, worker_id)

    def leader(self, role: str) -> tuple[str, float] | None:
        return self._leaders.leader(role)

    # instances

    def create_instance(self, instance: InstanceRecord) -> bool:
        return self._c.write(_INSERT_INSTANCE, instance) == 1

    def get_instance(self, instance_id: str) -> InstanceRecord | None:
        rows = self._c.rows(
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
            condition, values = _match_input(dotted, value)
            where.append(condition)
            args.extend(values)
        if query.after is not None:
            where.append("(created_at, instance_id) < (?, ?)")
            args.extend(query.after)
        sql = f"SELECT {_INSTANCE_COLUMNS} FROM workflow_instances"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, instance_id DESC LIMIT ?"
        args.append(query.limit)
        return [InstanceRecord(*row) for row in self._c.rows(sql, args)]

    def claim_runnable(
        self,
        owner: str,
        dead_workers: Sequence[str],
        workflows: Sequence[str],
        exclude: Sequence[str],
        limit: int,
    ) -> list[InstanceRecord]:
        if limit < 1 or not workflows:
            return []
        # One UPDATE ... RETURNING: SQLite runs it under the write lock, so two processes
        # claiming at once take disjoint instances.
        rows = self._c.rows(
            f"UPDATE workflow_instances SET lock_owner = ? WHERE instance_id IN ("
            f"SELECT instance_id FROM workflow_instances "
            f"WHERE status IN ({','.join('?' * len(ACTIVE_STATUSES))}) "
            "AND workflow_name IN (SELECT value FROM json_each(?)) "
            "AND instance_id NOT IN (SELECT value FROM json_each(?)) "
            "AND (lock_owner IS NULL OR lock_owner IN (SELECT value FROM json_each(?)) "
            "OR lock_owner NOT IN (SELECT worker_id FROM workers)) "
            f"ORDER BY created_at LIMIT ?) RETURNING {_INSTANCE_COLUMNS}",
            (
                owner,
                *ACTIVE_STATUSES,
                json.dumps(list(workflows)),
                json.dumps(list(exclude)),
                json.dumps(list(dead_workers)),
                limit,
            ),
        )
        return sorted((InstanceRecord(*row) for row in rows), key=lambda r: r.created_at)

    def claim_instance(self, instance_id: str, owner: str, previous: str | None) -> bool:
        return (
            self._c.write(
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
            self._c.write(
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
            self._c.write(
                "UPDATE workflow_instances SET status = ?, output = ?, error = coalesce(?, error), "
                "lock_owner = NULL, updated_at = unixepoch('subsec') "
                "WHERE instance_id = ? AND lock_owner = ?",
                (status, output, error, instance_id, owner),
            )
            == 1
        )

    def release_instance(self, instance_id: str, owner: str) -> None:
        self._c.write(
            "UPDATE workflow_instances SET lock_owner = NULL "
            "WHERE instance_id = ? AND lock_owner = ?",
            (instance_id, owner),
        )

    def request_cancel(self, instance_id: str, reason: str) -> None:
        self._c.write(
            "UPDATE workflow_instances SET cancel_reason = ? "
            "WHERE instance_id = ? AND cancel_reason IS NULL",
            (reason, instance_id),
        )

    def cancel_requests(self, owner: str) -> list[tuple[str, str]]:
        return [
            (row[0], row[1])
            for row in self._c.rows(
                "SELECT instance_id, cancel_reason FROM workflow_instances "
                "WHERE lock_owner = ? AND cancel_reason IS NOT NULL AND status = 'running'",
                (owner,),
            )
        ]

    def save_trace_context(self, instance_id: str, carrier: str) -> None:
        self._c.write(
            "UPDATE workflow_instances SET trace_context = ? WHERE instance_id = ?",
            (carrier, instance_id),
        )

    def load_trace_context(self, instance_id: str) -> str | None:
        rows = self._c.rows(
            "SELECT trace_context FROM workflow_instances WHERE instance_id = ?", (instance_id,)
        )
        return rows[0][0] if rows else None

    # history

    def load_history(self, instance_id: str) -> list[StepRecord]:
        rows = self._c.rows(
            f"SELECT {_STEP_COLUMNS} FROM workflow_history WHERE instance_id = ? ORDER BY seq",
            (instance_id,),
        )
        return [StepRecord(*row) for row in rows]

    def load_attempts(self, instance_id: str) -> list[AttemptRecord]:
        rows = self._c.rows(
            "SELECT instance_id, step_id, attempt, error, at FROM step_attempts "
            "WHERE instance_id = ? ORDER BY step_id, attempt",
            (instance_id,),
        )
        return [AttemptRecord(*row) for row in rows]

    def record_step(self, step: StepRecord, owner: str, events: Sequence[OutboxEvent] = ()) -> bool:
        if events:  # the step and its events commit together, or neither
            with self._c.immediate() as db:
                db.execute(_RECORD_STEP, (*step, step.instance_id, owner))
                recorded = db.changes() == 1
                if recorded:
                    outbox.insert(db, events)
            return recorded
        db = self._c.db
        try:
            db.execute(_RECORD_STEP, (*step, step.instance_id, owner))
            return db.changes() == 1
        except apsw.Error as error:
            self._c.fail(error)

    def record_steps(self, steps: Sequence[StepRecord], owner: str) -> list[bool]:
        results = []
        with self._c.immediate() as db:
            for step in steps:
                db.execute(_RECORD_STEP, (*step, step.instance_id, owner))
                results.append(db.changes() == 1)
        return results

    def record_attempt(self, attempt: AttemptRecord) -> None:
        self._c.write(
            "INSERT OR REPLACE INTO step_attempts (instance_id, step_id, attempt, error, at) "
            "VALUES (?,?,?,?,?)",
            (attempt.instance_id, attempt.step_id, attempt.attempt, attempt.error, attempt.at),
        )

    def open_session(self, *, wait: bool = True) -> SqliteSession:
        connection, generation = self._c.take()
        try:
            if wait:
                connection.execute("BEGIN IMMEDIATE")
            else:  # on the event loop: never sleep in SQLite's busy handler
                pragmas.busy_timeout(connection, 0)
                try:
                    connection.execute("BEGIN IMMEDIATE")
                finally:
                    pragmas.busy_timeout(connection, self._c.busy_ms)
        except apsw.Error as error:
            self._c.give_back(connection, generation)
            self._c.fail_other(error, connection)
        return SqliteSession(self._c, connection, generation)

    # the transactional outbox (store/sqlite/outbox.py)

    def claim_outbox(
        self, worker_id: str, now: float, until: float, limit: int
    ) -> list[OutboxRecord]:
        return self._outbox.claim(worker_id, now, until, limit)

    def settle_outbox(self, worker_id: str, outcomes: Sequence[OutboxOutcome]) -> None:
        self._outbox.settle(worker_id, outcomes)

    def release_outbox(self, worker_id: str) -> int:
        return self._outbox.release(worker_id)

    def list_outbox(
        self, status: str | None = None, instance_id: str | None = None, limit: int = 1000
    ) -> list[OutboxRecord]:
        return self._outbox.find(status, instance_id, limit)

    # views and diagnostics

    # time travel (store/sqlite/travel.py)

    def cut_history(self, instance_id: str, owner: str, cut: HistoryCut, now: float) -> int:
        return self._edits.cut_history(instance_id, owner, cut, now)

    def fork_instance(
        self,
        instance: InstanceRecord,
        steps: Sequence[StepRecord],
        subscriptions: Sequence[tuple[str, str]],
        groups: Sequence[str],
    ) -> bool:
        return self._edits.fork_instance(instance, steps, subscriptions, groups, _INSERT_INSTANCE)

    def table_counts(self) -> dict[str, int]:
        """Rows per table (tests; not part of the protocol)."""
        tables = [
            row[0]
            for row in self._c.rows(
                "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name"
            )
        ]
        return {t: self._c.rows(f'SELECT count(*) FROM "{t}"')[0][0] for t in tables}

    def read_table(self, name: str, where: Mapping[str, Any] | None = None) -> TableRows | None:
        columns = [row[1] for row in self._c.rows("SELECT * FROM pragma_table_info(?)", (name,))]
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
        return TableRows(columns, self._c.rows(sql, list(where.values())))


__all__ = ["SqliteSession", "SqliteStore"]
