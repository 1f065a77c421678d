"""The PostgreSQL store: many worker processes and kernels on one database.

Why psycopg 3 and its pool: autocommit connections make a durable step one ``INSERT`` in
one round trip (psycopg prepares statements it sees repeatedly), and the pool reconnects
by itself after the server went away. The engine calls this store from a thread
(``inline = False``), so its event loop never waits on the network.

Where to find the rest: ``connections.py`` (the pool, errors, reconnecting),
``translate.py`` (which errors are transient), ``sql.py`` (shared SQL and why each
multi-statement method locks what it locks), ``schema.py`` (migrations under an advisory
lock), ``instances.py`` (workers, leaders, instances, claims), ``waiting.py`` (timers,
channels, events, groups, recur), ``travel.py`` (rewind, rollback, fork), ``outbox.py``
(the transactional outbox) and ``watch.py`` (LISTEN/NOTIFY).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import psycopg

from romancy_nb.store.postgres import outbox, schema
from romancy_nb.store.postgres.aio import LoopCalls
from romancy_nb.store.postgres.connections import Connection, Connections
from romancy_nb.store.postgres.instances import InstanceQueries
from romancy_nb.store.postgres.sql import RECORD_STEP, SELECT_ATTEMPTS, SELECT_HISTORY
from romancy_nb.store.postgres.travel import HistoryEdits
from romancy_nb.store.postgres.waiting import WaitingQueries
from romancy_nb.store.postgres.watch import NotifyWatcher
from romancy_nb.store.protocol import (
    ArchivedRun,
    AttemptRecord,
    ChangeHint,
    HistoryCut,
    InstanceQuery,
    InstanceRecord,
    MessageRecord,
    OutboxEvent,
    OutboxOutcome,
    OutboxRecord,
    StepRecord,
    TableRows,
    WaitSpec,
    Wakeup,
    WokenRun,
    WorkerRecord,
)

_LOOP_CONNECTIONS = 8
"""Connections of the calls made on the event loop (``aio.py``): as many steps as a busy
worker keeps in flight, like the gate's threads."""
_SESSION_WAIT = 0.005
"""Seconds an activity on the event loop (``open_session(wait=False)``) waits for a free
pooled connection before the engine pauses it and tries again."""


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


class PostgresSession:
    """A transaction on a pooled connection, shared by user SQL and the step record."""

    def __init__(self, connections: Connections, connection: Connection) -> None:
        self._c = connections
        self._connection = connection
        self._open = True

    @property
    def connection(self) -> Connection:
        return self._connection

    def record_step(self, step: StepRecord, owner: str, events: Sequence[OutboxEvent] = ()) -> bool:
        connection = self._connection
        try:
            recorded = connection.execute(RECORD_STEP, (*step, step.instance_id, owner)).rowcount
            if recorded == 1 and events:
                outbox.insert(connection, events)
        except psycopg.Error as error:
            self._c.fail(error)
        return recorded == 1

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
            if connection.closed and statement == "ROLLBACK":
                return  # the server ended the transaction with the connection
            if connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                connection.execute(statement)
        except psycopg.Error as error:
            self._c.fail(error)
        finally:
            self._c.give_back(connection)  # a broken one is dropped, an open one rolled back


class PostgresStore:
    """:class:`~romancy_nb.store.protocol.Store` on a PostgreSQL database.

    ``min_size`` / ``max_size``: the pool's connections (the engine's thread, sessions of
    transactional activities, sweeps). ``connect_timeout``: seconds a call waits for a
    connection before it raises ``StoreUnavailableError`` (retried by the engine). The
    SQLite options every App passes (``synchronous``, ``busy_timeout``,
    ``wait_for_locks``) are accepted and ignored: the server owns durability and locking.
    """

    inline = False  # every call is a network round trip: the engine calls it from a thread

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 16,
        connect_timeout: float = 5.0,
        synchronous: str | None = None,
        busy_timeout: float | None = None,
        wait_for_locks: bool | None = None,
    ) -> None:
        del synchronous, busy_timeout, wait_for_locks  # SQLite's; see the class docstring
        self.url = url
        self._c = Connections(
            url, min_size=min_size, max_size=max_size, connect_timeout=connect_timeout
        )
        self.where = self._c.where
        self._instances = InstanceQueries(self._c)
        self._waiting = WaitingQueries(self._c)
        self._edits = HistoryEdits(self._c)
        self._outbox = outbox.OutboxQueries(self._c)
        self._migrations = schema.shipped()
        self._on_loop = LoopCalls(url, self._c.connect_kwargs, self.where, _LOOP_CONNECTIONS)

    def loop_call(self, name: str) -> Callable[..., Awaitable[Any]] | None:
        """The coroutine function making the method ``name`` on the caller's event loop
        instead of a thread, if there is one (``aio.py``: ``record_step``, and the calls of a
        wake-up); the engine's gate asks. It returns ``ON_A_THREAD``
        when the call must go to a thread after all."""
        return self._on_loop.call(name)

    def connect(self) -> Connection:
        """A connection of its own to the store's database (autocommit), for your queries."""
        return self._c.connect()

    def close(self) -> None:
        self._on_loop.close()
        self._c.close()

    def migrate(self) -> list[str]:
        return schema.apply(self._c, self._migrations)

    # workers and leaders (instances.py)

    def register_worker(self, worker: WorkerRecord) -> None:
        self._instances.register_worker(worker)

    def heartbeat(self, worker_id: str, now: float) -> None:
        self._instances.heartbeat(worker_id, now)

    def list_workers(self) -> list[WorkerRecord]:
        return self._instances.list_workers()

    def remove_worker(self, worker_id: str) -> None:
        self._instances.remove_worker(worker_id)

    def lead(self, role: str, worker_id: str, now: float, ttl: float) -> bool:
        return self._instances.lead(role, worker_id, now, ttl)

    def resign(self, role: str, worker_id: str) -> None:
        self._instances.resign(role, worker_id)

    def leader(self, role: str) -> tuple[str, float] | None:
        return self._instances.leader(role)

    # instances (instances.py)

    def create_instance(self, instance: InstanceRecord) -> bool:
        return self._instances.create_instance(instance)

    def get_instance(self, instance_id: str) -> InstanceRecord | None:
        return self._instances.get_instance(instance_id)

    def list_instances(self, query: InstanceQuery) -> list[InstanceRecord]:
        return self._instances.list_instances(query)

    def claim_runnable(
        self,
        owner: str,
        dead_workers: Sequence[str],
        workflows: Sequence[str],
        exclude: Sequence[str],
        limit: int,
    ) -> list[InstanceRecord]:
        return self._instances.claim_runnable(owner, dead_workers, workflows, exclude, limit)

    def claim_instance(self, instance_id: str, owner: str, previous: str | None) -> bool:
        return self._instances.claim_instance(instance_id, owner, previous)

    def set_status(
        self, instance_id: str, owner: str, status: str, error: str | None = None
    ) -> bool:
        return self._instances.set_status(instance_id, owner, status, error)

    def finish_instance(
        self,
        instance_id: str,
        owner: str,
        status: str,
        output: str | None,
        error: str | None,
    ) -> bool:
        return self._instances.finish_instance(instance_id, owner, status, output, error)

    def release_instance(self, instance_id: str, owner: str) -> None:
        self._instances.release_instance(instance_id, owner)

    def request_cancel(self, instance_id: str, reason: str) -> None:
        self._instances.request_cancel(instance_id, reason)

    def cancel_requests(self, owner: str) -> list[tuple[str, str]]:
        return self._instances.cancel_requests(owner)

    def save_trace_context(self, instance_id: str, carrier: str) -> None:
        self._instances.save_trace_context(instance_id, carrier)

    def load_trace_context(self, instance_id: str) -> str | None:
        return self._instances.load_trace_context(instance_id)

    # history

    def load_history(self, instance_id: str) -> list[StepRecord]:
        return [StepRecord(*row) for row in self._c.rows(SELECT_HISTORY, (instance_id,))]

    def load_attempts(self, instance_id: str) -> list[AttemptRecord]:
        return [AttemptRecord(*row) for row in self._c.rows(SELECT_ATTEMPTS, (instance_id,))]

    def record_step(self, step: StepRecord, owner: str, events: Sequence[OutboxEvent] = ()) -> bool:
        if not events:
            return self._c.write(RECORD_STEP, (*step, step.instance_id, owner)) == 1
        with self._c.transaction() as db:  # the step and its events commit together
            recorded = db.execute(RECORD_STEP, (*step, step.instance_id, owner)).rowcount == 1
            if recorded:
                outbox.insert(db, events)
        return recorded

    def record_steps(self, steps: Sequence[StepRecord], owner: str) -> list[bool]:
        with self._c.transaction() as db:
            return [
                db.execute(RECORD_STEP, (*step, step.instance_id, owner)).rowcount == 1
                for step in steps
            ]

    def record_attempt(self, attempt: AttemptRecord) -> None:
        self._c.write(
            "INSERT INTO step_attempts (instance_id, step_id, attempt, error, at) "
            "VALUES (%s,%s,%s,%s,%s) ON CONFLICT (instance_id, step_id, attempt) "
            "DO UPDATE SET error = excluded.error, at = excluded.at",
            attempt,
        )

    def open_session(self, *, wait: bool = True) -> PostgresSession:
        # No database-wide writer lock to wait for here: only for a free pooled connection,
        # which an activity on the event loop must not wait long for.
        return PostgresSession(self._c, self._c.begin(None if wait else _SESSION_WAIT))

    # the transactional outbox (outbox.py)

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

    # waiting (waiting.py)

    def take_message(
        self, instance_id: str, owner: str, wait: WaitSpec, seq: int, now: float
    ) -> StepRecord | None:
        return self._waiting.take_message(instance_id, owner, wait, seq, now)

    def suspend(
        self,
        instance_id: str,
        owner: str,
        status: str,
        waits: Sequence[WaitSpec],
        seq: int,
        now: float,
    ) -> StepRecord | None:
        return self._waiting.suspend(instance_id, owner, status, waits, seq, now)

    def wake(self, instance_id: str, step_id: str, owner: str, now: float) -> WokenRun | None:
        return self._waiting.wake(instance_id, step_id, owner, now)

    def due_timers(self, now: float, workflows: Sequence[str], limit: int) -> list[Wakeup]:
        return self._waiting.due_timers(now, workflows, limit)

    def pending_timers(self, instance_id: str) -> list[tuple[str, float]]:
        return self._waiting.pending_timers(instance_id)

    def next_timer_at(self, workflows: Sequence[str]) -> float | None:
        return self._waiting.next_timer_at(workflows)

    def message_wakeups(
        self, after_id: int, workflows: Sequence[str], channel: str | None = None
    ) -> tuple[list[Wakeup], int]:
        return self._waiting.message_wakeups(after_id, workflows, channel)

    def scan_wakeups(self, now: float, workflows: Sequence[str], limit: int) -> list[Wakeup]:
        return self._waiting.scan_wakeups(now, workflows, limit)

    def cancelled_while_waiting(self, workflows: Sequence[str]) -> list[tuple[str, str]]:
        return self._waiting.cancelled_while_waiting(workflows)

    def last_message_id(self) -> int:
        return self._waiting.last_message_id()

    def subscribe(
        self, instance_id: str, owner: str, channel: str, mode: str, step: StepRecord
    ) -> None:
        self._waiting.subscribe(instance_id, owner, channel, mode, step)

    def unsubscribe(self, instance_id: str, owner: str, channel: str, step: StepRecord) -> None:
        self._waiting.unsubscribe(instance_id, owner, channel, step)

    def get_subscription_mode(self, instance_id: str, channel: str) -> str | None:
        return self._waiting.get_subscription_mode(instance_id, channel)

    def publish(
        self, message: MessageRecord, step: StepRecord | None = None, owner: str | None = None
    ) -> int:
        return self._waiting.publish(message, step, owner)

    def delete_messages(self, before: float) -> int:
        return self._waiting.delete_messages(before)

    def join_group(self, instance_id: str, owner: str, group: str, step: StepRecord) -> None:
        self._waiting.join_group(instance_id, owner, group, step)

    def leave_group(self, instance_id: str, owner: str, group: str, step: StepRecord) -> None:
        self._waiting.leave_group(instance_id, owner, group, step)

    def group_members(self, group: str) -> list[str]:
        return self._waiting.group_members(group)

    def recur(self, instance_id: str, owner: str, input_json: str, now: float) -> int:
        return self._waiting.recur(instance_id, owner, input_json, now)

    def archived_runs(self, instance_id: str) -> list[ArchivedRun]:
        return self._waiting.archived_runs(instance_id)

    def load_archived_history(self, instance_id: str, run_no: int) -> list[StepRecord]:
        return self._waiting.load_archived_history(instance_id, run_no)

    def delete_archives(self, before: float) -> int:
        return self._waiting.delete_archives(before)

    def load_waits(self, instance_id: str) -> list[WaitSpec]:
        return self._waiting.load_waits(instance_id)

    # time travel (travel.py)

    def cut_history(self, instance_id: str, owner: str, cut: HistoryCut, now: float) -> int:
        return self._edits.cut_history(instance_id, owner, cut, now)

    def fork_instance(
        self,
        instance: InstanceRecord,
        steps: Sequence[StepRecord],
        subscriptions: Sequence[tuple[str, str]],
        groups: Sequence[str],
    ) -> bool:
        return self._edits.fork_instance(instance, steps, subscriptions, groups)

    # views and change detection

    def table_counts(self) -> dict[str, int]:
        """Rows per table of the store's schema (tests, diagnostics; not part of the
        protocol, as on SQLite)."""
        tables = [
            row[0]
            for row in self._c.rows(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "ORDER BY tablename"
            )
        ]
        return {t: self._c.rows(f"SELECT count(*) FROM {_quoted(t)}")[0][0] for t in tables}

    def read_table(self, name: str, where: Mapping[str, Any] | None = None) -> TableRows | None:
        # SQLite's names are case-insensitive: the exact (quoted) name first, then folded
        oid, table = self._c.rows(
            "SELECT t::oid, t::text FROM (SELECT coalesce(to_regclass(quote_ident(%s)), "
            "to_regclass(quote_ident(lower(%s)))) AS t) AS found",
            (name, name),
        )[0]
        if oid is None:
            return None
        columns = [
            row[0]
            for row in self._c.rows(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
                "AND NOT attisdropped ORDER BY attnum",
                (oid,),
            )
        ]
        where = where or {}
        unknown = set(where) - set(columns)
        if unknown:
            raise ValueError(f"table {name!r} has no column(s) {sorted(unknown)}")
        key = self._c.rows(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey::int2[]) WHERE i.indrelid = %s AND i.indisprimary "
            "ORDER BY array_position(i.indkey::int2[], a.attnum)",
            (oid,),
        )
        # ``table`` is PostgreSQL's own quoting of the name; columns were checked above.
        sql = f"SELECT * FROM {table}"
        if where:
            sql += " WHERE " + " AND ".join(f"{_quoted(column)} = %s" for column in where)
        if key:  # as SQLite reads a table keyed by its primary key: in key order
            sql += " ORDER BY " + ", ".join(_quoted(row[0]) for row in key)
        return TableRows(columns, self._c.rows(sql, list(where.values())))

    def watch(self, on_change: Callable[[ChangeHint], None], interval: float) -> NotifyWatcher:
        return NotifyWatcher(self._c, on_change, interval)


__all__ = ["PostgresSession", "PostgresStore"]
