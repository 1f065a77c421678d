"""SQL for durable waiting on PostgreSQL: timers, channel messages, events, groups, recur.

The same operations as SQLite's (``romancy_nb/store/sqlite/waiting.py``), each one
transaction, made safe for many workers at once by the locks ``sql.py`` describes:

- *suspend* locks the instance and shares its channels' locks, then records an answered
  wait at once or registers the waits, sets the status and releases the lease;
- *wake* locks the waiting instance (a second worker waking it waits, then finds it
  leased and gives up), consumes the message, records the step and takes the lease;
- a competing or direct message is consumed by deleting it with ``FOR UPDATE SKIP
  LOCKED``: two takers never get the same message, and neither waits for the other.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from romancy_nb.errors import ChannelModeConflictError, ChannelNotSubscribedError
from romancy_nb.store.postgres.connections import Connection, Connections
from romancy_nb.store.postgres.conversation import Batch, Conversation, Read, Write, in_pipeline
from romancy_nb.store.postgres.sql import (
    CHANNEL_LOCKS,
    INSERT_STEP,
    MESSAGE_COLUMNS,
    NEWEST_MESSAGE,
    NOW,
    SELECT_ATTEMPTS,
    SELECT_HISTORY,
    SELECT_INSTANCE,
    STEP_COLUMNS,
    WAITING,
    lease_lost,
    lock_channels,
    lock_lease,
)
from romancy_nb.store.protocol import (
    ArchivedRun,
    AttemptRecord,
    InstanceRecord,
    MessageRecord,
    StepRecord,
    WaitSpec,
    Wakeup,
    WokenRun,
    message_output,
    timer_output,
)

_TAKE = {
    "competing": (
        "DELETE FROM channel_messages WHERE id = (SELECT id FROM channel_messages "
        "WHERE channel = %s AND target_instance_id IS NULL ORDER BY id LIMIT 1 "
        f"FOR UPDATE SKIP LOCKED) RETURNING {MESSAGE_COLUMNS}"
    ),
    "direct": (
        "DELETE FROM channel_messages WHERE id = (SELECT id FROM channel_messages "
        "WHERE channel = %s AND target_instance_id = %s ORDER BY id LIMIT 1 "
        f"FOR UPDATE SKIP LOCKED) RETURNING {MESSAGE_COLUMNS}"
    ),
}
_NEXT_BROADCAST = (
    f"SELECT {MESSAGE_COLUMNS} FROM channel_messages WHERE channel = %s "
    "AND target_instance_id IS NULL AND id > %s ORDER BY id LIMIT 1"
)
_ADVANCE = "UPDATE channel_subscriptions SET cursor = %s WHERE instance_id = %s AND channel = %s"
"""A broadcast subscriber read the message with this id: its cursor moves past it."""
_DROP_WAIT = "DELETE FROM waits WHERE instance_id = %s AND step_id = %s"
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
    f"i.status IN {WAITING} AND i.lock_owner IS NULL AND i.cancel_reason IS NULL "
    "AND i.workflow_name = ANY(%s)"
)
MESSAGE_WAKEUPS = (
    "SELECT n.last_id, x.channel, x.instance_id, x.workflow_name, x.step_id, x.mode, x.available "
    "FROM channel_message_ids n LEFT JOIN LATERAL (SELECT w.channel, w.instance_id, "
    "i.workflow_name, w.step_id, s.mode, (SELECT count(*) FROM channel_messages m "
    "WHERE m.channel = w.channel AND m.target_instance_id IS NULL) AS available, w.created_at "
    "FROM waits w JOIN workflow_instances i ON i.instance_id = w.instance_id "
    "JOIN channel_subscriptions s ON s.instance_id = w.instance_id AND s.channel = w.channel "
    "WHERE w.channel IN (SELECT DISTINCT channel FROM channel_messages WHERE id > %s "
    "AND %s::text IS NULL UNION SELECT %s::text) "
    f"AND {_WAKEABLE} AND {_AVAILABLE}) x ON TRUE ORDER BY x.channel, x.created_at"
)
"""``message_wakeups`` in one statement (one row with NULLs when nobody is to wake)."""
_END_WAIT = (
    "WITH registered AS (DELETE FROM waits WHERE instance_id = %s AND step_id = %s "
    f"RETURNING created_at) INSERT INTO workflow_history ({STEP_COLUMNS}) "
    "SELECT %s,%s,%s,%s,%s,%s,%s,%s,NULL,1,"
    "least(coalesce((SELECT created_at FROM registered), %s::float8), %s::float8),%s "
    "RETURNING started_at"
)
_WAKE_LOCK = (
    "SELECT w.kind, w.name, w.input, w.channel, w.fire_at FROM waits w "
    "JOIN workflow_instances i ON i.instance_id = w.instance_id "
    f"WHERE w.instance_id = %s AND w.step_id = %s AND i.status IN {WAITING} "
    "AND i.lock_owner IS NULL AND i.cancel_reason IS NULL FOR UPDATE OF i"
)
"""A wake's first statement: lock the instance if it still waits, unleased, on the step."""
_WAKE_STATE = (
    "SELECT EXISTS (SELECT 1 FROM workflow_history WHERE instance_id = %s AND step_id = %s), "
    "(SELECT coalesce(max(seq), 0) + 1 FROM workflow_history WHERE instance_id = %s), "
    "s.mode, s.cursor FROM (SELECT 1) AS one LEFT JOIN channel_subscriptions s "
    "ON s.instance_id = %s AND s.channel = (SELECT channel FROM waits w "
    "WHERE w.instance_id = s.instance_id AND w.step_id = %s)"
)
"""Sent with the lock: whether the step is recorded already (a stale wait), the next
``seq``, and the subscription of the wait's channel (NULLs without one)."""
_WAKE_LEASE = (
    "UPDATE workflow_instances SET status = 'running', lock_owner = %s, updated_at = %s "
    "WHERE instance_id = %s"
)
_RECUR = (
    f"WITH moved AS (DELETE FROM workflow_history WHERE instance_id = %s "
    f"RETURNING {STEP_COLUMNS}), "
    f"archived AS (INSERT INTO workflow_history_archive (run_no, {STEP_COLUMNS}) "
    f"SELECT %s, {STEP_COLUMNS} FROM moved RETURNING 1), "
    "attempts AS (DELETE FROM step_attempts WHERE instance_id = %s), "
    "ended_waits AS (DELETE FROM waits WHERE instance_id = %s), "
    "subscriptions AS (DELETE FROM channel_subscriptions WHERE instance_id = %s), "
    "memberships AS (DELETE FROM group_members WHERE instance_id = %s), "
    "run AS (INSERT INTO workflow_runs_archive (instance_id, run_no, status, input, "
    "next_input, steps, started_at, ended_at) SELECT %s, %s, 'recurred', %s, %s, "
    "(SELECT count(*) FROM archived), %s, %s) "
    "UPDATE workflow_instances SET input = %s, status = 'running', error = NULL, "
    "updated_at = %s WHERE instance_id = %s"
)
"""A recur in one statement: PostgreSQL runs every data-modifying part of a WITH to
completion, in one snapshot (the history it moves is the history it deletes)."""
PUBLISH = (
    "INSERT INTO channel_messages (message_id, channel, target_instance_id, data, metadata, "
    "sender_instance_id, created_at) SELECT %s,%s,%s,%s,%s,%s,%s "
    f"FROM (SELECT pg_advisory_xact_lock({CHANNEL_LOCKS}, hashtext(%s))) AS locked "
    "ON CONFLICT (channel, message_id) DO NOTHING RETURNING id"
)
"""One statement: the channel's lock (see ``sql.py``), then the insert, whose trigger takes
the message id; in autocommit both locks last until the statement commits."""


def message_wakeups_args(
    after_id: int, workflows: Sequence[str], channel: str | None
) -> tuple[object, ...]:
    """The parameters of :data:`MESSAGE_WAKEUPS`."""
    return (after_id, channel, channel, list(workflows))


def found_wakeups(
    rows: list[tuple[Any, ...]], after_id: int, channel: str | None
) -> tuple[list[Wakeup], int]:
    """``message_wakeups``'s answer from the rows of :data:`MESSAGE_WAKEUPS`."""
    newest = after_id if channel is not None else rows[0][0]
    found: list[Wakeup] = []
    for _, waiters in itertools.groupby((r for r in rows if r[1] is not None), lambda r: r[1]):
        listed = list(waiters)
        if len(listed) > 1 and listed[0][5] == "competing":
            # A competing message wakes one waiter: no more waiters than messages.
            listed = listed[: listed[0][6]]
        found.extend(Wakeup(*row[2:5]) for row in listed)
    return found, newest


def publish_args(message: MessageRecord) -> tuple[object, ...]:
    """The parameters of :data:`PUBLISH`."""
    return (*message[1:], message.channel)


def _taking(instance_id: str, channel: str, mode: str, cursor: int) -> Read:
    """The statement that reads (broadcast: then :data:`_ADVANCE`) or consumes
    (competing, direct) the instance's next message on ``channel``."""
    if mode == "broadcast":
        return Read(_NEXT_BROADCAST, (channel, cursor))
    if mode == "direct":
        return Read(_TAKE["direct"], (channel, instance_id))
    return Read(_TAKE["competing"], (channel,))


def end_wait_args(
    instance_id: str, wait: WaitSpec, seq: int, status: str, output: str, now: float
) -> tuple[object, ...]:
    """The parameters of :data:`_END_WAIT`."""
    return (
        instance_id, wait.step_id, instance_id, seq, wait.step_id, wait.kind, wait.name,
        status, wait.input, output, now, now, now,
    )  # fmt: skip


def wake_conversation(
    instance_id: str, step_id: str, owner: str, now: float
) -> Conversation[WokenRun | None]:
    """``wake`` (see ``conversation.py``): three round trips when a message ends the wait
    (lock and read; take the message; record, hand over the lease, read the instance back
    and commit), two when a timer does."""
    # the state is read once the lock is held (a statement of its own: its own snapshot)
    locked, state = yield Batch(
        (
            Read(_WAKE_LOCK, (instance_id, step_id)),
            Read(_WAKE_STATE, (instance_id, step_id, instance_id, instance_id, step_id)),
        )
    )
    if not locked:
        return None
    answered, next_seq, mode, cursor = state[0] if state else (False, 1, None, 0)
    if answered:  # a stale wait: drop it
        yield Batch((Write(_DROP_WAIT, (instance_id, step_id)),), commit=True)
        return None
    wait = WaitSpec(step_id, *locked[0])
    ended: tuple[str, str] | None = None
    then: list[Read | Write] = []
    if wait.channel is not None and mode is not None:
        (taken,) = yield Batch((_taking(instance_id, wait.channel, mode, cursor),))
        if taken:
            ended = ("completed", message_output(MessageRecord(*taken[0])))
            if mode == "broadcast":
                then.append(Write(_ADVANCE, (taken[0][0], instance_id, wait.channel)))
    if ended is None and wait.fire_at is not None and wait.fire_at <= now:
        status = "completed" if wait.channel is None else "timed_out"
        ended = (status, timer_output(wait.fire_at, now))
    if ended is None:
        return None
    instance, history, attempts = yield Batch(
        (
            *then,
            Write(_END_WAIT, end_wait_args(instance_id, wait, next_seq, *ended, now)),
            Write(_WAKE_LEASE, (owner, now, instance_id)),
            Read(f"{SELECT_INSTANCE} WHERE instance_id = %s", (instance_id,)),
            Read(SELECT_HISTORY, (instance_id,)),
            Read(SELECT_ATTEMPTS, (instance_id,)),
        ),
        commit=True,
    )
    return WokenRun(
        InstanceRecord(*instance[0]),
        [StepRecord(*r) for r in history],
        [AttemptRecord(*r) for r in attempts],
    )


def message_wakeups_conversation(
    after_id: int, workflows: Sequence[str], channel: str | None
) -> Conversation[tuple[list[Wakeup], int]]:
    """``message_wakeups``: one round trip (it is on the path of every cross-process
    wake-up) — the newest id, and the waiters of each channel that has messages after
    ``after_id`` (or of ``channel``), with how many untargeted messages a competing
    channel holds. Its plan costs more than its execution: planned once per connection."""
    args = message_wakeups_args(after_id, workflows, channel)
    (rows,) = yield Batch((Read(MESSAGE_WAKEUPS, args),), commit=True)
    return found_wakeups(rows, after_id, channel)


class WaitingQueries:
    """The waiting half of the Store protocol on PostgreSQL (see the module docstring)."""

    def __init__(self, connections: Connections) -> None:
        self._c = connections

    # one wait's answer

    @staticmethod
    def _subscription(db: Connection, instance_id: str, channel: str) -> tuple[str, int] | None:
        row = db.execute(
            "SELECT mode, cursor FROM channel_subscriptions "
            "WHERE instance_id = %s AND channel = %s",
            (instance_id, channel),
        ).fetchone()
        return (row[0], row[1]) if row else None

    @staticmethod
    def _take(
        db: Connection, instance_id: str, channel: str, mode: str, cursor: int
    ) -> MessageRecord | None:
        """Find and consume the instance's next message on ``channel``."""
        taking = _taking(instance_id, channel, mode, cursor)
        row = db.execute(taking.sql, taking.args).fetchone()
        if row is not None and mode == "broadcast":
            db.execute(_ADVANCE, (row[0], instance_id, channel))
        return MessageRecord(*row) if row else None

    def _answer(
        self, db: Connection, instance_id: str, wait: WaitSpec, seq: int, now: float
    ) -> StepRecord | None:
        """Record ``wait``'s step if a message or its timer answers it now; else None."""
        if wait.channel is not None:
            subscription = self._subscription(db, instance_id, wait.channel)
            if subscription is not None:
                message = self._take(db, instance_id, wait.channel, *subscription)
                if message is not None:
                    return self._end_wait(
                        db, instance_id, wait, seq, "completed", message_output(message), now
                    )
        stored = db.execute(
            "SELECT fire_at FROM waits WHERE instance_id = %s AND step_id = %s",
            (instance_id, wait.step_id),
        ).fetchone()
        fire_at = stored[0] if stored else wait.fire_at  # the first registration wins
        if fire_at is not None and fire_at <= now:
            status = "completed" if wait.channel is None else "timed_out"
            return self._end_wait(
                db, instance_id, wait, seq, status, timer_output(fire_at, now), now
            )
        return None

    @staticmethod
    def _end_wait(
        db: Connection,
        instance_id: str,
        wait: WaitSpec,
        seq: int,
        status: str,
        output: str,
        now: float,
    ) -> StepRecord:
        # A wait's step spans the wait: from when it was registered (now, if it is
        # answered as it is asked) to now. One statement drops the wait and records it.
        row = db.execute(
            _END_WAIT, end_wait_args(instance_id, wait, seq, status, output, now)
        ).fetchone()
        assert row is not None
        step = StepRecord(
            instance_id, seq, wait.step_id, wait.kind, wait.name, status, wait.input, output,
            None, 1, row[0], now,
        )  # fmt: skip
        return step

    # ending and starting waits

    def take_message(
        self, instance_id: str, owner: str, wait: WaitSpec, seq: int, now: float
    ) -> StepRecord | None:
        assert wait.channel is not None
        with self._c.transaction() as db:
            leased = db.execute(  # the lease check and the subscription in one round trip
                "SELECT s.mode, s.cursor FROM workflow_instances i "
                "LEFT JOIN channel_subscriptions s ON s.instance_id = i.instance_id "
                "AND s.channel = %s WHERE i.instance_id = %s AND i.lock_owner = %s "
                "FOR UPDATE OF i",
                (wait.channel, instance_id, owner),
            ).fetchone()
            if leased is None:
                raise lease_lost(instance_id)
            subscription = None if leased[0] is None else (leased[0], leased[1])
            if subscription is None:
                raise ChannelNotSubscribedError(
                    f"instance {instance_id!r} receives on channel {wait.channel!r} without "
                    f"a subscription: call 'await ctx.subscribe({wait.channel!r}, mode=...)' "
                    "before 'ctx.receive'",
                    instance_id=instance_id,
                    channel=wait.channel,
                )
            message = self._take(db, instance_id, wait.channel, *subscription)
            if message is None:
                return None
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
        with self._c.transaction() as db:
            lock_lease(db, instance_id, owner)
            lock_channels(db, [w.channel for w in waits if w.channel is not None], shared=True)
            # Recorded already: an earlier take_message committed, then its caller saw an
            # error and retried. Replay from history instead of waiting for ever.
            recorded = {
                row[2]: StepRecord(*row)
                for row in db.execute(
                    f"SELECT {STEP_COLUMNS} FROM workflow_history "
                    "WHERE instance_id = %s AND step_id = ANY(%s)",
                    (instance_id, [wait.step_id for wait in waits]),
                )
            }
            for wait in waits:
                if wait.step_id in recorded:
                    return recorded[wait.step_id]
            for wait in waits:
                answered = self._answer(db, instance_id, wait, seq, now)
                if answered is not None:
                    return answered
            with db.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO waits (instance_id, step_id, kind, name, input, channel, "
                    "fire_at, created_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) "
                    "ON CONFLICT (instance_id, step_id) DO NOTHING",
                    [(instance_id, *wait, now) for wait in waits],
                )
            db.execute(
                "UPDATE workflow_instances SET status = %s, lock_owner = NULL, updated_at = %s "
                "WHERE instance_id = %s",
                (status, now, instance_id),
            )
        return None

    def wake(self, instance_id: str, step_id: str, owner: str, now: float) -> WokenRun | None:
        return self._c.pipelined(  # a conversation each time: a stale connection retries
            lambda db: in_pipeline(db, wake_conversation(instance_id, step_id, owner, now)),
            generic=True,
        )

    # finding what to wake

    def load_waits(self, instance_id: str) -> list[WaitSpec]:
        rows = self._c.rows(
            "SELECT step_id, kind, name, input, channel, fire_at FROM waits "
            "WHERE instance_id = %s ORDER BY created_at, step_id",
            (instance_id,),
        )
        return [WaitSpec(*row) for row in rows]

    def pending_timers(self, instance_id: str) -> list[tuple[str, float]]:
        return [
            (row[0], row[1])
            for row in self._c.rows(
                "SELECT step_id, fire_at FROM waits WHERE instance_id = %s "
                "AND fire_at IS NOT NULL ORDER BY fire_at",
                (instance_id,),
            )
        ]

    def due_timers(self, now: float, workflows: Sequence[str], limit: int) -> list[Wakeup]:
        rows = self._c.rows(
            "SELECT w.instance_id, i.workflow_name, w.step_id FROM waits w "
            "JOIN workflow_instances i ON i.instance_id = w.instance_id "
            f"WHERE w.fire_at IS NOT NULL AND w.fire_at <= %s AND {_WAKEABLE} "
            "ORDER BY w.fire_at LIMIT %s",
            (now, list(workflows), limit),
        )
        return [Wakeup(*row) for row in rows]

    def next_timer_at(self, workflows: Sequence[str]) -> float | None:
        rows = self._c.rows(
            "SELECT w.fire_at FROM waits w "
            "JOIN workflow_instances i ON i.instance_id = w.instance_id "
            f"WHERE w.fire_at IS NOT NULL AND {_WAKEABLE} ORDER BY w.fire_at LIMIT 1",
            (list(workflows),),
        )
        return rows[0][0] if rows else None

    def message_wakeups(
        self, after_id: int, workflows: Sequence[str], channel: str | None = None
    ) -> tuple[list[Wakeup], int]:
        return self._c.pipelined(
            lambda db: in_pipeline(db, message_wakeups_conversation(after_id, workflows, channel)),
            generic=True,
        )

    def scan_wakeups(self, now: float, workflows: Sequence[str], limit: int) -> list[Wakeup]:
        rows = self._c.rows(
            "SELECT w.instance_id, i.workflow_name, w.step_id FROM waits w "
            "JOIN workflow_instances i ON i.instance_id = w.instance_id "
            "LEFT JOIN channel_subscriptions s ON s.instance_id = w.instance_id "
            f"AND s.channel = w.channel WHERE {_WAKEABLE} AND "
            "((w.fire_at IS NOT NULL AND w.fire_at <= %s) OR "
            f"(s.mode IS NOT NULL AND {_AVAILABLE})) LIMIT %s",
            (list(workflows), now, limit),
        )
        return [Wakeup(*row) for row in rows]

    def cancelled_while_waiting(self, workflows: Sequence[str]) -> list[tuple[str, str]]:
        rows = self._c.rows(
            "SELECT instance_id, workflow_name FROM workflow_instances "
            f"WHERE cancel_reason IS NOT NULL AND status IN {WAITING} AND lock_owner IS NULL "
            "AND workflow_name = ANY(%s)",
            (list(workflows),),
        )
        return [(row[0], row[1]) for row in rows]

    def last_message_id(self) -> int:
        newest: int = self._c.rows(NEWEST_MESSAGE)[0][0]
        return newest

    # channels

    def subscribe(
        self, instance_id: str, owner: str, channel: str, mode: str, step: StepRecord | None
    ) -> None:
        with self._c.transaction() as db:
            lock_lease(db, instance_id, owner)
            lock_channels(db, [channel], shared=False)  # no two first subscribers in two modes
            other = db.execute(
                "SELECT mode FROM channel_subscriptions WHERE channel = %s AND mode <> %s "
                "AND instance_id <> %s LIMIT 1",
                (channel, mode, instance_id),
            ).fetchone()
            if other is not None:
                raise ChannelModeConflictError(
                    f"channel {channel!r} has subscribers in {other[0]!r} mode; it cannot "
                    f"also be subscribed in {mode!r} mode. Use another channel name, or the "
                    "same mode.",
                    channel=channel,
                    existing_mode=other[0],
                    requested_mode=mode,
                )
            existing = self._subscription(db, instance_id, channel)
            if existing is None or existing[0] != mode:
                # A broadcast subscriber sees the messages published from now on.
                db.execute(
                    "INSERT INTO channel_subscriptions (instance_id, channel, mode, cursor, "
                    f"created_at) SELECT %s, %s, %s, last_id, {NOW} FROM channel_message_ids "
                    "ON CONFLICT (instance_id, channel) DO UPDATE SET mode = excluded.mode, "
                    "cursor = excluded.cursor",
                    (instance_id, channel, mode),
                )
            if step is not None:
                db.execute(INSERT_STEP, step)

    def unsubscribe(self, instance_id: str, owner: str, channel: str, step: StepRecord) -> None:
        with self._c.transaction() as db:
            lock_lease(db, instance_id, owner)
            db.execute(
                "DELETE FROM channel_subscriptions WHERE instance_id = %s AND channel = %s",
                (instance_id, channel),
            )
            db.execute(INSERT_STEP, step)

    def get_subscription_mode(self, instance_id: str, channel: str) -> str | None:
        rows = self._c.rows(
            "SELECT mode FROM channel_subscriptions WHERE instance_id = %s AND channel = %s",
            (instance_id, channel),
        )
        return rows[0][0] if rows else None

    def publish(
        self, message: MessageRecord, step: StepRecord | None = None, owner: str | None = None
    ) -> int:
        args = publish_args(message)
        if step is None:  # from outside a workflow: one statement, its own transaction
            rows = self._c.rows(PUBLISH, args)
            return int(rows[0][0]) if rows else 0
        assert owner is not None
        with self._c.transaction() as db:
            lock_lease(db, step.instance_id, owner)
            row = db.execute(PUBLISH, args).fetchone()
            db.execute(INSERT_STEP, step)
        return int(row[0]) if row else 0

    def delete_messages(self, before: float) -> int:
        return self._c.write("DELETE FROM channel_messages WHERE created_at < %s", (before,))

    # groups

    def join_group(self, instance_id: str, owner: str, group: str, step: StepRecord) -> None:
        with self._c.transaction() as db:
            lock_lease(db, instance_id, owner)
            db.execute(
                "INSERT INTO group_members (group_name, instance_id, joined_at) "
                "VALUES (%s,%s,%s) ON CONFLICT (group_name, instance_id) DO NOTHING",
                (group, instance_id, step.started_at),
            )
            db.execute(INSERT_STEP, step)

    def leave_group(self, instance_id: str, owner: str, group: str, step: StepRecord) -> None:
        with self._c.transaction() as db:
            lock_lease(db, instance_id, owner)
            db.execute(
                "DELETE FROM group_members WHERE group_name = %s AND instance_id = %s",
                (group, instance_id),
            )
            db.execute(INSERT_STEP, step)

    def group_members(self, group: str) -> list[str]:
        rows = self._c.rows(
            "SELECT instance_id FROM group_members WHERE group_name = %s "
            "ORDER BY joined_at, instance_id",
            (group,),
        )
        return [row[0] for row in rows]

    # recur

    def recur(self, instance_id: str, owner: str, input_json: str, now: float) -> int:
        with self._c.transaction() as db:
            old_input, created_at = lock_lease(db, instance_id, owner)
            last = db.execute(
                "SELECT run_no, ended_at FROM workflow_runs_archive WHERE instance_id = %s "
                "ORDER BY run_no DESC LIMIT 1",
                (instance_id,),
            ).fetchone()
            run_no, last_end = (last[0] + 1, last[1]) if last else (1, None)
            db.execute(
                _RECUR,
                (instance_id, run_no, *[instance_id] * 5, run_no, old_input, input_json,
                 last_end or created_at, now, input_json, now, instance_id),
            )  # fmt: skip
        return run_no

    def archived_runs(self, instance_id: str) -> list[ArchivedRun]:
        rows = self._c.rows(
            "SELECT instance_id, run_no, status, input, next_input, steps, started_at, "
            "ended_at, cut_after FROM workflow_runs_archive WHERE instance_id = %s "
            "ORDER BY run_no",
            (instance_id,),
        )
        return [ArchivedRun(*row) for row in rows]

    def load_archived_history(self, instance_id: str, run_no: int) -> list[StepRecord]:
        rows = self._c.rows(
            f"SELECT {STEP_COLUMNS} FROM workflow_history_archive WHERE instance_id = %s "
            "AND run_no = %s ORDER BY seq",
            (instance_id, run_no),
        )
        return [StepRecord(*row) for row in rows]

    def delete_archives(self, before: float) -> int:
        with self._c.transaction() as db:
            db.execute(
                "DELETE FROM workflow_history_archive WHERE (instance_id, run_no) IN "
                "(SELECT instance_id, run_no FROM workflow_runs_archive WHERE ended_at < %s)",
                (before,),
            )
            return db.execute(
                "DELETE FROM workflow_runs_archive WHERE ended_at < %s", (before,)
            ).rowcount


__all__ = [
    "MESSAGE_WAKEUPS",
    "PUBLISH",
    "WaitingQueries",
    "found_wakeups",
    "message_wakeups_args",
    "publish_args",
]
