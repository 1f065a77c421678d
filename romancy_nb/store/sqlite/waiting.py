"""SQL for durable waiting: timers, channel messages, events, groups and recur.

The base class of :class:`~romancy_nb.store.sqlite.store.SqliteStore`. Every operation that ends
or starts a wait is one ``BEGIN IMMEDIATE`` transaction, so a crash can neither lose a
wake-up nor deliver one twice:

- *suspend*: an answered wait is recorded at once (no sleep, no replay later); otherwise the
  waits are registered, the status set and the lease released together — a publisher that
  commits after us finds the wait, one that committed before us is seen by us.
- *wake*: consume the message (delete it, or move a broadcast cursor), record the step, drop
  the wait, set the instance running and hand its lease to the waking worker.

Why ``BEGIN IMMEDIATE`` and not a deferred transaction: a deferred one that reads first and
writes later fails at once with ``SQLITE_BUSY`` (no busy wait) when another process wrote in
between; taking the write lock up front lets the busy timeout do its work.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import apsw

from romancy_nb.errors import ChannelModeConflictError, ChannelNotSubscribedError, LockLostError
from romancy_nb.store.protocol import (
    WAITING_STATUSES,
    ArchivedRun,
    AttemptRecord,
    ChangeHint,
    InstanceRecord,
    MessageRecord,
    StepRecord,
    WaitSpec,
    Wakeup,
    WokenRun,
    message_output,
    timer_output,
)
from romancy_nb.store.sqlite.connections import Connections
from romancy_nb.store.sqlite.watch import ChangeWatcher

_WAITING = "(" + ",".join(f"'{status}'" for status in WAITING_STATUSES) + ")"
_MESSAGE_COLUMNS = (
    "id, message_id, channel, target_instance_id, data, metadata, sender_instance_id, created_at"
)
_STEP_COLUMNS = (
    "instance_id, seq, step_id, kind, name, status, input, output, error, attempts, "
    "started_at, finished_at"
)
_INSERT_STEP = f"INSERT INTO workflow_history ({_STEP_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
_NEXT_SEQ = "SELECT coalesce(max(seq), 0) + 1 FROM workflow_history WHERE instance_id = ?"
_WOKEN_INSTANCE = (
    "SELECT instance_id, workflow_name, status, input, output, error, lock_owner, "
    "cancel_reason, code_version, created_at, updated_at, forked_from, forked_at "
    "FROM workflow_instances WHERE instance_id = ?"
)
_WOKEN_HISTORY = f"SELECT {_STEP_COLUMNS} FROM workflow_history WHERE instance_id = ? ORDER BY seq"
_WOKEN_ATTEMPTS = (
    "SELECT instance_id, step_id, attempt, error, at FROM step_attempts "
    "WHERE instance_id = ? ORDER BY step_id, attempt"
)
_NEXT_MESSAGE = {
    "broadcast": (
        f"SELECT {_MESSAGE_COLUMNS} FROM channel_messages WHERE channel = ? "
        "AND target_instance_id IS NULL AND id > ? ORDER BY id LIMIT 1"
    ),
    "competing": (
        f"SELECT {_MESSAGE_COLUMNS} FROM channel_messages WHERE channel = ? "
        "AND target_instance_id IS NULL AND ? IS NOT NULL ORDER BY id LIMIT 1"
    ),
    "direct": (
        f"SELECT {_MESSAGE_COLUMNS} FROM channel_messages WHERE channel = ? "
        "AND target_instance_id = ? ORDER BY id LIMIT 1"
    ),
}
# Whether the wait row ``w`` (with its subscription ``s``) has a message to take. Three
# EXISTS, one per mode, so each is a range probe of channel_messages_by_channel.
_AVAILABLE = (
    "((s.mode = 'broadcast' AND EXISTS (SELECT 1 FROM channel_messages m WHERE "
    "m.channel = w.channel AND m.target_instance_id IS NULL AND m.id > s.cursor)) "
    "OR (s.mode = 'competing' AND EXISTS (SELECT 1 FROM channel_messages m WHERE "
    "m.channel = w.channel AND m.target_instance_id IS NULL)) "
    "OR (s.mode = 'direct' AND EXISTS (SELECT 1 FROM channel_messages m WHERE "
    "m.channel = w.channel AND m.target_instance_id = w.instance_id)))"
)
# A waiting instance asked to cancel is not woken (a competing message stays for others):
# the sweep cancels it instead (cancelled_while_waiting).
_WAKEABLE = (
    "i.status IN " + _WAITING + " AND i.lock_owner IS NULL AND i.cancel_reason IS NULL "
    "AND i.workflow_name IN (SELECT value FROM json_each(?))"
)


def _names(workflows: Sequence[str]) -> str:
    return json.dumps(list(workflows))


class WaitingQueries:
    """The waiting half of the Store protocol, on the engine connection of ``connections``.

    The base of :class:`~romancy_nb.store.sqlite.store.SqliteStore`; it owns its
    collaborator (no attribute of the store is assumed).
    """

    def __init__(self, connections: Connections) -> None:
        self._c = connections

    @staticmethod
    def _check_lease(db: apsw.Connection, instance_id: str, owner: str) -> None:
        if not db.execute(
            "SELECT 1 FROM workflow_instances WHERE instance_id = ? AND lock_owner = ?",
            (instance_id, owner),
        ).fetchall():
            raise LockLostError(
                f"this worker no longer holds instance {instance_id!r}",
                instance_id=instance_id,
            )

    @staticmethod
    def _insert_step(db: apsw.Connection, step: StepRecord) -> None:
        db.execute(_INSERT_STEP, step)

    @staticmethod
    def _next_message(
        db: apsw.Connection, instance_id: str, channel: str, mode: str, cursor: int
    ) -> MessageRecord | None:
        key: Any = instance_id if mode == "direct" else cursor
        rows: list[tuple[Any, ...]] = db.execute(_NEXT_MESSAGE[mode], (channel, key)).fetchall()
        return MessageRecord(*rows[0]) if rows else None

    @staticmethod
    def _consume(db: apsw.Connection, instance_id: str, mode: str, message: MessageRecord) -> None:
        if mode == "broadcast":
            db.execute(
                "UPDATE channel_subscriptions SET cursor = ? WHERE instance_id = ? AND channel = ?",
                (message.id, instance_id, message.channel),
            )
        else:  # competing and direct messages go to one taker: remove them
            db.execute("DELETE FROM channel_messages WHERE id = ?", (message.id,))

    @staticmethod
    def _subscription(
        db: apsw.Connection, instance_id: str, channel: str
    ) -> tuple[str, int] | None:
        rows: list[tuple[Any, ...]] = db.execute(
            "SELECT mode, cursor FROM channel_subscriptions WHERE instance_id = ? AND channel = ?",
            (instance_id, channel),
        ).fetchall()
        return (rows[0][0], rows[0][1]) if rows else None

    def _answer(
        self, db: apsw.Connection, instance_id: str, wait: WaitSpec, seq: int, now: float
    ) -> StepRecord | None:
        """Record ``wait``'s step if a message or its timer answers it now; else None."""
        if wait.channel is not None:
            subscription = self._subscription(db, instance_id, wait.channel)
            if subscription is not None:
                mode, cursor = subscription
                message = self._next_message(db, instance_id, wait.channel, mode, cursor)
                if message is not None:
                    self._consume(db, instance_id, mode, message)
                    return self._end_wait(
                        db, instance_id, wait, seq, "completed", message_output(message), now
                    )
        stored: list[tuple[Any, ...]] = db.execute(
            "SELECT fire_at FROM waits WHERE instance_id = ? AND step_id = ?",
            (instance_id, wait.step_id),
        ).fetchall()
        fire_at = stored[0][0] if stored else wait.fire_at  # the first registration wins
        if fire_at is not None and fire_at <= now:
            status = "completed" if wait.channel is None else "timed_out"
            return self._end_wait(
                db, instance_id, wait, seq, status, timer_output(fire_at, now), now
            )
        return None

    def _end_wait(
        self,
        db: apsw.Connection,
        instance_id: str,
        wait: WaitSpec,
        seq: int,
        status: str,
        output: str,
        now: float,
    ) -> StepRecord:
        # A wait's step spans the wait: from when it was registered (now, if it is
        # answered as it is asked) to now.
        registered: list[tuple[Any, ...]] = db.execute(
            "SELECT created_at FROM waits WHERE instance_id = ? AND step_id = ?",
            (instance_id, wait.step_id),
        ).fetchall()
        began = min(registered[0][0], now) if registered else now
        step = StepRecord(
            instance_id, seq, wait.step_id, wait.kind, wait.name, status, wait.input, output,
            None, 1, began, now,
        )  # fmt: skip
        self._insert_step(db, step)
        db.execute(
            "DELETE FROM waits WHERE instance_id = ? AND step_id = ?",
            (instance_id, wait.step_id),
        )
        return step

    # ending and starting waits

    def take_message(
        self, instance_id: str, owner: str, wait: WaitSpec, seq: int, now: float
    ) -> StepRecord | None:
        assert wait.channel is not None
        with self._c.immediate() as db:
            self._check_lease(db, instance_id, owner)
            subscription = self._subscription(db, instance_id, wait.channel)
            if subscription is None:
                raise ChannelNotSubscribedError(
                    f"instance {instance_id!r} receives on channel {wait.channel!r} without "
                    f"a subscription: call 'await ctx.subscribe({wait.channel!r}, mode=...)' "
                    "before 'ctx.receive'",
                    instance_id=instance_id,
                    channel=wait.channel,
                )
            mode, cursor = subscription
            message = self._next_message(db, instance_id, wait.channel, mode, cursor)
            if message is None:
                return None
            self._consume(db, instance_id, mode, message)
            return self._end_wait(
                db, instance_id, wait, seq, "completed", message_output(message), now
            )

    def suspend(
        self,
        instance_id: str,
        owner: str,
        status: str,
        waits: Sequence[WaitSpec],
        seq: int,
        now: float,
    ) -> StepRecord | None:
        with self._c.immediate() as db:
            self._check_lease(db, instance_id, owner)
            for wait in waits:
                # Recorded already: an earlier take_message committed, then its caller saw
                # an error and retried. Replay from history instead of waiting for ever.
                recorded: list[tuple[Any, ...]] = db.execute(
                    f"SELECT {_STEP_COLUMNS} FROM workflow_history "
                    "WHERE instance_id = ? AND step_id = ?",
                    (instance_id, wait.step_id),
                ).fetchall()
                if recorded:
                    return StepRecord(*recorded[0])
            for wait in waits:
                answered = self._answer(db, instance_id, wait, seq, now)
                if answered is not None:
                    return answered
            for wait in waits:
                db.execute(
                    "INSERT OR IGNORE INTO waits (instance_id, step_id, kind, name, input, "
                    "channel, fire_at, created_at) VALUES (?,?,?,?,?,?,?,?)",
                    (instance_id, *wait, now),
                )
            db.execute(
                "UPDATE workflow_instances SET status = ?, lock_owner = NULL, updated_at = ? "
                "WHERE instance_id = ?",
                (status, now, instance_id),
            )
        return None

    def wake(self, instance_id: str, step_id: str, owner: str, now: float) -> WokenRun | None:
        with self._c.immediate() as db:
            rows: list[tuple[Any, ...]] = db.execute(
                "SELECT w.kind, w.name, w.input, w.channel, w.fire_at FROM waits w "
                "JOIN workflow_instances i ON i.instance_id = w.instance_id "
                f"WHERE w.instance_id = ? AND w.step_id = ? AND i.status IN {_WAITING} "
                "AND i.lock_owner IS NULL AND i.cancel_reason IS NULL",
                (instance_id, step_id),
            ).fetchall()
            if not rows:
                return None
            if db.execute(
                "SELECT 1 FROM workflow_history WHERE instance_id = ? AND step_id = ?",
                (instance_id, step_id),
            ).fetchall():  # answered already (a stale wait): drop it
                db.execute(
                    "DELETE FROM waits WHERE instance_id = ? AND step_id = ?",
                    (instance_id, step_id),
                )
                return None
            wait = WaitSpec(step_id, *rows[0])
            next_seq: list[tuple[Any, ...]] = db.execute(_NEXT_SEQ, (instance_id,)).fetchall()
            seq: int = next_seq[0][0]
            if self._answer(db, instance_id, wait, seq, now) is None:
                return None
            db.execute(
                "UPDATE workflow_instances SET status = 'running', lock_owner = ?, "
                "updated_at = ? WHERE instance_id = ?",
                (owner, now, instance_id),
            )
            args = (instance_id,)
            record: list[Any] = db.execute(_WOKEN_INSTANCE, args).fetchall()
            return WokenRun(
                InstanceRecord(*record[0]),
                [StepRecord(*row) for row in db.execute(_WOKEN_HISTORY, args)],
                [AttemptRecord(*row) for row in db.execute(_WOKEN_ATTEMPTS, args)],
            )

    # finding what to wake

    # The finders below write ``CROSS JOIN``, which SQLite never reorders: the waits indexes
    # (by fire time, by channel) drive them, so their cost follows the due or woken waits,
    # not the number of waiting instances (which the status index would make them scan).

    def load_waits(self, instance_id: str) -> list[WaitSpec]:
        rows = self._c.rows(
            "SELECT step_id, kind, name, input, channel, fire_at FROM waits "
            "WHERE instance_id = ? ORDER BY created_at, step_id",
            (instance_id,),
        )
        return [WaitSpec(*row) for row in rows]

    def pending_timers(self, instance_id: str) -> list[tuple[str, float]]:
        return [
            (row[0], row[1])
            for row in self._c.rows(
                "SELECT step_id, fire_at FROM waits WHERE instance_id = ? "
                "AND fire_at IS NOT NULL ORDER BY fire_at",
                (instance_id,),
            )
        ]

    def due_timers(self, now: float, workflows: Sequence[str], limit: int) -> list[Wakeup]:
        rows = self._c.rows(
            "SELECT w.instance_id, i.workflow_name, w.step_id FROM waits w "
            "CROSS JOIN workflow_instances i ON i.instance_id = w.instance_id "
            f"WHERE w.fire_at IS NOT NULL AND w.fire_at <= ? AND {_WAKEABLE} "
            "ORDER BY w.fire_at LIMIT ?",
            (now, _names(workflows), limit),
        )
        return [Wakeup(*row) for row in rows]

    def next_timer_at(self, workflows: Sequence[str]) -> float | None:
        rows = self._c.rows(
            "SELECT w.fire_at FROM waits w "
            "CROSS JOIN workflow_instances i ON i.instance_id = w.instance_id "
            f"WHERE w.fire_at IS NOT NULL AND {_WAKEABLE} ORDER BY w.fire_at LIMIT 1",
            (_names(workflows),),
        )
        return rows[0][0] if rows else None

    def message_wakeups(
        self, after_id: int, workflows: Sequence[str], channel: str | None = None
    ) -> tuple[list[Wakeup], int]:
        if channel is not None:
            newest = after_id  # not asked for: the caller names the channel
            channels = [channel]
        else:
            newest = self.last_message_id()
            channels = [
                row[0]
                for row in self._c.rows(
                    "SELECT DISTINCT channel FROM channel_messages WHERE id > ?", (after_id,)
                )
            ]
        names = _names(workflows)
        found: list[Wakeup] = []
        for name in channels:
            rows = self._c.rows(
                "SELECT w.instance_id, i.workflow_name, w.step_id, s.mode FROM waits w "
                "CROSS JOIN workflow_instances i ON i.instance_id = w.instance_id "
                "CROSS JOIN channel_subscriptions s ON s.instance_id = w.instance_id "
                "AND s.channel = w.channel "
                f"WHERE w.channel = ? AND {_WAKEABLE} AND {_AVAILABLE} ORDER BY w.created_at",
                (name, names),
            )
            if len(rows) > 1 and rows[0][3] == "competing":
                # A competing message wakes one waiter: no more waiters than messages.
                available = self._c.rows(
                    "SELECT count(*) FROM channel_messages WHERE channel = ? "
                    "AND target_instance_id IS NULL",
                    (name,),
                )[0][0]
                rows = rows[:available]
            found.extend(Wakeup(*row[:3]) for row in rows)
        return found, newest

    def scan_wakeups(self, now: float, workflows: Sequence[str], limit: int) -> list[Wakeup]:
        # Its own short-lived connection: the sweep calls this from a thread, and a scan of
        # every waiting instance must not hold the engine connection's mutex meanwhile.
        connection = self._c.open()
        try:
            rows: list[tuple[Any, ...]] = connection.execute(
                "SELECT w.instance_id, i.workflow_name, w.step_id FROM waits w "
                "JOIN workflow_instances i ON i.instance_id = w.instance_id "
                "LEFT JOIN channel_subscriptions s ON s.instance_id = w.instance_id "
                f"AND s.channel = w.channel WHERE {_WAKEABLE} AND "
                "((w.fire_at IS NOT NULL AND w.fire_at <= ?) OR "
                f"(s.mode IS NOT NULL AND {_AVAILABLE})) LIMIT ?",
                (_names(workflows), now, limit),
            ).fetchall()
        except apsw.Error as error:
            self._c.fail_other(error, connection)
        finally:
            connection.close()
        return [Wakeup(*row) for row in rows]

    def cancelled_while_waiting(self, workflows: Sequence[str]) -> list[tuple[str, str]]:
        rows = self._c.rows(
            "SELECT instance_id, workflow_name FROM workflow_instances "
            "INDEXED BY workflow_instances_cancel_requested "  # only instances asked to cancel
            f"WHERE status IN {_WAITING} AND lock_owner IS NULL AND cancel_reason IS NOT NULL "
            "AND workflow_name IN (SELECT value FROM json_each(?))",
            (_names(workflows),),
        )
        return [(row[0], row[1]) for row in rows]

    def last_message_id(self) -> int:
        rows = self._c.rows("SELECT seq FROM sqlite_sequence WHERE name = 'channel_messages'")
        return rows[0][0] if rows else 0

    # channels

    def subscribe(
        self, instance_id: str, owner: str, channel: str, mode: str, step: StepRecord | None
    ) -> None:
        with self._c.immediate() as db:
            self._check_lease(db, instance_id, owner)
            # ``mode IN (the others)``, not ``mode != ?``: seeks in the (channel, mode) index
            # instead of reading every subscriber of a channel with 100,000 of them
            others = [m for m in ("broadcast", "competing", "direct") if m != mode]
            other: list[tuple[Any, ...]] = db.execute(
                "SELECT mode FROM channel_subscriptions WHERE channel = ? AND mode IN (?, ?) "
                "AND instance_id != ? LIMIT 1",
                (channel, *others, instance_id),
            ).fetchall()
            if other:
                raise ChannelModeConflictError(
                    f"channel {channel!r} has subscribers in {other[0][0]!r} mode; it cannot "
                    f"also be subscribed in {mode!r} mode. Use another channel name, or the "
                    "same mode.",
                    channel=channel,
                    existing_mode=other[0][0],
                    requested_mode=mode,
                )
            existing = self._subscription(db, instance_id, channel)
            if existing is None or existing[0] != mode:
                # A broadcast subscriber sees the messages published from now on.
                cursor = db.execute(
                    "SELECT coalesce((SELECT seq FROM sqlite_sequence "
                    "WHERE name = 'channel_messages'), 0)"
                ).fetchall()[0][0]
                db.execute(
                    "INSERT INTO channel_subscriptions (instance_id, channel, mode, cursor, "
                    "created_at) VALUES (?,?,?,?,unixepoch('subsec')) ON CONFLICT "
                    "(instance_id, channel) DO UPDATE SET mode = excluded.mode, "
                    "cursor = excluded.cursor",
                    (instance_id, channel, mode, cursor),
                )
            if step is not None:
                self._insert_step(db, step)

    def unsubscribe(self, instance_id: str, owner: str, channel: str, step: StepRecord) -> None:
        with self._c.immediate() as db:
            self._check_lease(db, instance_id, owner)
            db.execute(
                "DELETE FROM channel_subscriptions WHERE instance_id = ? AND channel = ?",
                (instance_id, channel),
            )
            self._insert_step(db, step)

    def get_subscription_mode(self, instance_id: str, channel: str) -> str | None:
        rows = self._c.rows(
            "SELECT mode FROM channel_subscriptions WHERE instance_id = ? AND channel = ?",
            (instance_id, channel),
        )
        return rows[0][0] if rows else None

    def publish(
        self, message: MessageRecord, step: StepRecord | None = None, owner: str | None = None
    ) -> int:
        insert = (
            "INSERT OR IGNORE INTO channel_messages (message_id, channel, target_instance_id, "
            "data, metadata, sender_instance_id, created_at) VALUES (?,?,?,?,?,?,?)"
        )
        if step is None:  # from outside a workflow: one statement, its own transaction
            try:
                self._c.db.execute(insert, message[1:])
            except apsw.Error as error:
                self._c.fail(error)
            return self._c.db.last_insert_rowid() if self._c.db.changes() == 1 else 0
        with self._c.immediate() as db:
            assert owner is not None
            self._check_lease(db, step.instance_id, owner)
            db.execute(insert, message[1:])
            new_id = db.last_insert_rowid() if db.changes() == 1 else 0
            self._insert_step(db, step)
        return new_id

    def delete_messages(self, before: float) -> int:
        try:
            self._c.db.execute("DELETE FROM channel_messages WHERE created_at < ?", (before,))
        except apsw.Error as error:
            self._c.fail(error)
        return self._c.db.changes()

    # groups

    def join_group(self, instance_id: str, owner: str, group: str, step: StepRecord) -> None:
        with self._c.immediate() as db:
            self._check_lease(db, instance_id, owner)
            db.execute(
                "INSERT OR IGNORE INTO group_members (group_name, instance_id, joined_at) "
                "VALUES (?,?,?)",
                (group, instance_id, step.started_at),
            )
            self._insert_step(db, step)

    def leave_group(self, instance_id: str, owner: str, group: str, step: StepRecord) -> None:
        with self._c.immediate() as db:
            self._check_lease(db, instance_id, owner)
            db.execute(
                "DELETE FROM group_members WHERE group_name = ? AND instance_id = ?",
                (group, instance_id),
            )
            self._insert_step(db, step)

    def group_members(self, group: str) -> list[str]:
        rows = self._c.rows(
            "SELECT instance_id FROM group_members WHERE group_name = ? "
            "ORDER BY joined_at, instance_id",
            (group,),
        )
        return [row[0] for row in rows]

    # recur

    def recur(self, instance_id: str, owner: str, input_json: str, now: float) -> int:
        with self._c.immediate() as db:
            rows: list[tuple[Any, ...]] = db.execute(
                "SELECT input, created_at FROM workflow_instances WHERE instance_id = ? "
                "AND lock_owner = ?",
                (instance_id, owner),
            ).fetchall()
            if not rows:
                raise LockLostError(
                    f"this worker no longer holds instance {instance_id!r}",
                    instance_id=instance_id,
                )
            old_input, created_at = rows[0]
            last: list[tuple[Any, ...]] = (
                db.execute(  # the newest archived run, by primary key (no scan)
                    "SELECT run_no, ended_at FROM workflow_runs_archive WHERE instance_id = ? "
                    "ORDER BY run_no DESC LIMIT 1",
                    (instance_id,),
                ).fetchall()
            )
            run_no, last_end = (last[0][0] + 1, last[0][1]) if last else (1, None)
            db.execute(
                f"INSERT INTO workflow_history_archive (run_no, {_STEP_COLUMNS}) "
                f"SELECT ?, {_STEP_COLUMNS} FROM workflow_history WHERE instance_id = ?",
                (run_no, instance_id),
            )
            steps = db.changes()
            db.execute(
                "INSERT INTO workflow_runs_archive (instance_id, run_no, status, input, "
                "next_input, steps, started_at, ended_at) VALUES (?,?,'recurred',?,?,?,?,?)",
                (instance_id, run_no, old_input, input_json, steps, last_end or created_at, now),
            )
            for table in (
                "workflow_history",
                "step_attempts",
                "waits",
                "channel_subscriptions",
                "group_members",
            ):
                db.execute(f"DELETE FROM {table} WHERE instance_id = ?", (instance_id,))
            db.execute(
                "UPDATE workflow_instances SET input = ?, status = 'running', error = NULL, "
                "updated_at = ? WHERE instance_id = ?",
                (input_json, now, instance_id),
            )
        return run_no

    def archived_runs(self, instance_id: str) -> list[ArchivedRun]:
        rows = self._c.rows(
            "SELECT instance_id, run_no, status, input, next_input, steps, started_at, "
            "ended_at, cut_after FROM workflow_runs_archive WHERE instance_id = ? "
            "ORDER BY run_no",
            (instance_id,),
        )
        return [ArchivedRun(*row) for row in rows]

    def load_archived_history(self, instance_id: str, run_no: int) -> list[StepRecord]:
        rows = self._c.rows(
            f"SELECT {_STEP_COLUMNS} FROM workflow_history_archive WHERE instance_id = ? "
            "AND run_no = ? ORDER BY seq",
            (instance_id, run_no),
        )
        return [StepRecord(*row) for row in rows]

    def delete_archives(self, before: float) -> int:
        with self._c.immediate() as db:
            db.execute(
                "DELETE FROM workflow_history_archive WHERE (instance_id, run_no) IN "
                "(SELECT instance_id, run_no FROM workflow_runs_archive WHERE ended_at < ?)",
                (before,),
            )
            db.execute("DELETE FROM workflow_runs_archive WHERE ended_at < ?", (before,))
            return db.changes()

    # change detection

    def watch(self, on_change: Callable[[ChangeHint], None], interval: float) -> ChangeWatcher:
        # inotify on the database's folder where there is one (see watch.py)
        where = self._c.where
        folder = None if where == ":memory:" else os.path.dirname(where)
        return ChangeWatcher(self._c.open, on_change, interval, folder=folder)


__all__ = ["WaitingQueries"]
