"""The one boundary between the engine and storage.

The engine talks to storage only through :class:`Store`; each backend owns its SQL and
migrations. Records crossing the boundary are frozen dataclasses holding JSON as text, so
the store never needs to know the engine's types and the engine never sees a cursor.

Records are ``NamedTuple``s: immutable and typed like frozen dataclasses, but built and bound
as SQL parameters without per-field overhead on the hot path of every durable step.

The methods are synchronous on purpose: an APSW commit in WAL mode costs tens of
microseconds, far less than handing the call to a thread and back, so the engine calls the
store directly from the event loop.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

ACTIVE_STATUSES = ("running", "compensating", "rolling_back")
"""Statuses of instances that hold a lease while they run and must be resumed after a crash."""

FINAL_STATUSES = ("completed", "failed", "cancelled")

WAITING_STATUSES = ("waiting_for_timer", "waiting_for_event", "waiting_for_message")
"""Statuses of suspended instances: no lease, no coroutine; woken by a timer or a message."""


class InstanceRecord(NamedTuple):
    """A workflow instance row. JSON fields are text; times are Unix seconds."""

    instance_id: str
    workflow_name: str
    status: str
    input: str
    output: str | None
    error: str | None
    lock_owner: str | None
    cancel_reason: str | None
    code_version: str | None
    created_at: float
    updated_at: float
    forked_from: str | None = None
    """The instance this one was forked from (``app.fork``), else None."""
    forked_at: str | None = None
    """The last step copied from ``forked_from`` (None: the fork copied no step)."""


class StepRecord(NamedTuple):
    """One recorded step of an instance's history (an activity result, a compensation...)."""

    instance_id: str
    seq: int
    step_id: str
    kind: str
    name: str
    status: str
    input: str | None
    output: str | None
    error: str | None
    attempts: int
    started_at: float
    finished_at: float


class OutboxEvent(NamedTuple):
    """A CloudEvent an activity published with ``ctx.send_event``, written in the step's
    transaction: it exists exactly when the step that sent it completed."""

    event_id: str
    instance_id: str
    step_id: str
    event_type: str
    data: str
    """The event's data as JSON text."""
    attributes: str
    """Its other CloudEvents attributes (source, time, subject, datacontenttype,
    extensions) as a JSON object."""
    created_at: float


OUTBOX_STATUSES = ("pending", "delivered", "failed")
"""``pending`` until the relayer delivers it (``delivered``) or gives up (``failed``)."""


class OutboxRecord(NamedTuple):
    """A row of the outbox: the event, and how its delivery goes."""

    seq: int
    """The order of events (increasing as they were written; per instance, in step order)."""
    event_id: str
    instance_id: str
    step_id: str
    event_type: str
    data: str
    attributes: str
    created_at: float
    status: str
    attempts: int
    next_attempt_at: float
    last_error: str | None
    delivered_at: float | None


class OutboxOutcome(NamedTuple):
    """What became of a claimed outbox event: ``delivered``, ``failed`` for good, or
    ``pending`` again (tried ``attempts`` times, next at ``next_attempt_at``; an event
    that was not tried keeps its count)."""

    seq: int
    status: str
    attempts: int
    next_attempt_at: float
    error: str | None
    at: float


class AttemptRecord(NamedTuple):
    """A failed attempt of a step, kept so retries survive a crash."""

    instance_id: str
    step_id: str
    attempt: int
    error: str
    at: float


class WorkerRecord(NamedTuple):
    """A live (or once live) worker process and its lease heartbeat."""

    worker_id: str
    host: str
    pid: int
    proc_start: str | None
    started_at: float
    heartbeat_at: float


@dataclass(frozen=True, slots=True)
class InstanceQuery:
    """Filters for listing instances; ``after`` is a keyset cursor (created_at, instance_id)."""

    workflow: str | None = None
    status: str | None = None
    instance_id: str | None = None
    input_equals: Mapping[str, Any] | None = None
    after: tuple[float, str] | None = None
    limit: int = 100


class WaitSpec(NamedTuple):
    """One unanswered wait step of an instance: a timer, a channel message, or both.

    A sleep has only ``fire_at``; a receive / wait_event has ``channel`` (and ``fire_at`` when
    it has a timeout). ``kind``, ``name`` and ``input`` are what the step is recorded with
    when the wait ends, so any worker can end it without the workflow's code.
    """

    step_id: str
    kind: str
    name: str
    input: str | None
    channel: str | None = None
    fire_at: float | None = None


class MessageRecord(NamedTuple):
    """A channel message or event; ``data`` and ``metadata`` are JSON text.

    ``id`` is the store's increasing sequence number (0 before it is stored);
    ``message_id`` is the public id (unique per channel: a second message with the same id
    on the same channel is ignored, so a redelivered event is not seen twice).
    """

    id: int
    message_id: str
    channel: str
    target_instance_id: str | None
    data: str
    metadata: str
    sender_instance_id: str | None
    created_at: float


class Wakeup(NamedTuple):
    """A waiting instance that can be woken now (its timer is due or a message awaits it)."""

    instance_id: str
    workflow_name: str
    step_id: str


ON_A_THREAD: Any = type("OnAThread", (), {"__repr__": lambda self: "ON_A_THREAD"})()
"""What a store's loop call (:class:`CallsOnTheLoop`) returns when it cannot make the
call on the event loop now: the engine makes it from a thread instead."""


@runtime_checkable
class CallsOnTheLoop(Protocol):
    """A store (not ``inline``) that can make some of its calls on the caller's event loop
    without blocking it, where handing them to a thread would cost as much as the call
    (PostgreSQL: the per-step statement and the calls of a wake-up; ``engine/gate.py``)."""

    def loop_call(self, name: str) -> Callable[..., Awaitable[Any]] | None:
        """The coroutine function making the store method ``name`` on the running loop,
        or None (the method is made from a thread). It may return :data:`ON_A_THREAD`
        when it cannot make a call now."""


class WokenRun(NamedTuple):
    """What a successful ``wake`` returns: the instance as the wake left it (running,
    leased to the waker), its history (the ended wait's step last) and its attempts, read
    in the wake's own transaction: what the engine needs to replay it, in the same call."""

    record: InstanceRecord
    history: list[StepRecord]
    attempts: list[AttemptRecord]


class ChangeHint(NamedTuple):
    """What a change watcher reports: the newest message id and the earliest timer, and
    whether instances may have become runnable (started for any worker, released, their
    holder gone) or had a cancellation requested, so the engine looks for them now
    instead of at its next sweep."""

    last_message_id: int
    next_fire_at: float | None
    runnable: bool = False
    cancels: bool = False


class ArchivedRun(NamedTuple):
    """History an instance no longer replays, kept for inspection.

    ``status`` says why: ``recurred`` (a whole run that called ``ctx.recur``; ``next_input``
    is what the next run got), or the steps cut off by ``rewound``, ``rolled_back``,
    ``retried`` or ``diverged`` (``on_divergence="rewind"``); ``cut_after`` is then the last
    step kept (None: history was cut from its start).
    """

    instance_id: str
    run_no: int
    status: str
    input: str
    next_input: str | None
    steps: int
    started_at: float
    ended_at: float
    cut_after: str | None = None


class HistoryCut(NamedTuple):
    """What ``Store.cut_history`` does to an instance, decided by the engine.

    ``archive`` are the ``seq`` of the steps to move into a new archived run with status
    ``archived_as`` (no archived run when empty); ``cut_after`` is the last step kept.
    Afterwards the instance listens on ``subscriptions`` ((channel, mode) pairs, added where
    missing) and no longer on ``unsubscribe``; it belongs to ``groups`` and not to
    ``leave``; everything else it listens on or belongs to is left as it is. ``marker``,
    when given, is recorded after the cut (a rollback's "rolling back to" step).
    """

    archive: Sequence[int]
    archived_as: str
    cut_after: str | None
    status: str
    subscriptions: Sequence[tuple[str, str]] = ()
    unsubscribe: Sequence[str] = ()
    groups: Sequence[str] = ()
    leave: Sequence[str] = ()
    marker: StepRecord | None = None


class TableRows(NamedTuple):
    """A whole table (or its rows matching a filter) as read for views and exports.

    ``columns`` name the values of each row, in order; values are the stored ones (JSON
    columns as text, times as Unix seconds). The notebook turns it into a DataFrame.
    """

    columns: list[str]
    rows: list[tuple[Any, ...]]


class Watch(Protocol):
    """A running change watcher; ``stop`` ends it and waits for its thread."""

    def stop(self) -> None: ...


def message_output(message: MessageRecord) -> str:
    """The JSON a received message is recorded as in history (the same for every backend)."""
    return (
        f'{{"id":{json.dumps(message.message_id)},"seq":{message.id},'
        f'"channel":{json.dumps(message.channel)},"data":{message.data},'
        f'"metadata":{message.metadata},'
        f'"sender_instance_id":{json.dumps(message.sender_instance_id)},'
        f'"created_at":{message.created_at!r}}}'
    )


def timer_output(fire_at: float | None, fired_at: float) -> str:
    """The JSON a fired timer (a sleep, or a wait's timeout) is recorded as in history."""
    return json.dumps({"fire_at": fire_at, "fired_at": fired_at})


class Session(Protocol):
    """A store transaction that an activity's own writes share with its history record."""

    @property
    def connection(self) -> Any:
        """The backend's connection object, in the open transaction (for user SQL)."""

    def record_step(self, step: StepRecord, owner: str, events: Sequence[OutboxEvent] = ()) -> bool:
        """Write ``step`` (and the outbox ``events`` it sent) in this transaction; False,
        and nothing written, if ``owner`` lost the instance's lease."""

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


@runtime_checkable
class Store(Protocol):
    """What the engine needs from storage. See ``romancy_nb.store.sqlite`` for the default."""

    url: str

    inline: bool
    """True when every call completes in about one local statement (SQLite): the engine
    then calls the store on the event loop. False for a store that may wait on a network:
    the engine calls it from a thread, so the loop never blocks on it."""

    def migrate(self) -> list[str]:
        """Apply pending migrations; return the versions applied."""

    def close(self) -> None: ...

    # workers and leases
    def register_worker(self, worker: WorkerRecord) -> None: ...

    def heartbeat(self, worker_id: str, now: float) -> None: ...

    def list_workers(self) -> list[WorkerRecord]: ...

    def remove_worker(self, worker_id: str) -> None: ...

    def lead(self, role: str, worker_id: str, now: float, ttl: float) -> bool:
        """Take or renew the lease of ``role`` (one leader per database, e.g. "sweeper"):
        True if ``worker_id`` holds it until ``now + ttl`` — it held it already, nobody
        did, or the holder's lease expired. False while another worker's lease runs."""

    def resign(self, role: str, worker_id: str) -> None:
        """Give up ``role`` if ``worker_id`` holds it (a clean shutdown): the next
        candidate takes over at once instead of after the lease expires."""

    def leader(self, role: str) -> tuple[str, float] | None:
        """(holder, lease expiry) of ``role``, or None if nobody ever held it."""

    # instances
    def create_instance(self, instance: InstanceRecord) -> bool:
        """Insert; False (and nothing written) if the id exists already."""

    def get_instance(self, instance_id: str) -> InstanceRecord | None: ...

    def list_instances(self, query: InstanceQuery) -> list[InstanceRecord]: ...

    def claim_runnable(
        self,
        owner: str,
        dead_workers: Sequence[str],
        workflows: Sequence[str],
        exclude: Sequence[str],
        limit: int,
    ) -> list[InstanceRecord]:
        """Take the lease of up to ``limit`` runnable instances, oldest first, in one
        transaction, and return them as they are now (leased to ``owner``).

        Runnable: active (``ACTIVE_STATUSES``), of one of ``workflows``, not in ``exclude``,
        and held by nobody, by one of ``dead_workers`` or by a worker that is not
        registered. Workers claiming at the same moment never get the same instance and
        never wait on each other (PostgreSQL: ``FOR UPDATE SKIP LOCKED``).
        """

    def claim_instance(self, instance_id: str, owner: str, previous: str | None) -> bool:
        """Take the lease if it is still held by ``previous``; False if someone else won."""

    def set_status(
        self, instance_id: str, owner: str, status: str, error: str | None = None
    ) -> bool: ...

    def finish_instance(
        self,
        instance_id: str,
        owner: str,
        status: str,
        output: str | None,
        error: str | None,
    ) -> bool:
        """Set a final status and release the lease; False if ``owner`` lost it."""

    def release_instance(self, instance_id: str, owner: str) -> None: ...

    def request_cancel(self, instance_id: str, reason: str) -> None: ...

    def cancel_requests(self, owner: str) -> list[tuple[str, str]]:
        """(instance_id, reason) of instances held by ``owner`` that were asked to cancel."""

    def save_trace_context(self, instance_id: str, carrier: str) -> None:
        """Keep the trace context the instance's runs continue (a JSON object of W3C
        ``traceparent``/``tracestate`` headers, from ``App(hooks=...)``)."""

    def load_trace_context(self, instance_id: str) -> str | None:
        """The trace context saved for the instance, or None."""

    # history
    def load_history(self, instance_id: str) -> list[StepRecord]:
        """All steps of an instance in one read, ordered by ``seq``."""

    def load_attempts(self, instance_id: str) -> list[AttemptRecord]: ...

    def record_step(self, step: StepRecord, owner: str, events: Sequence[OutboxEvent] = ()) -> bool:
        """Write one step, and the outbox ``events`` it sent, in one transaction; False
        (nothing written) if ``owner`` lost the lease. An event id stored already is
        stored once."""

    def record_steps(self, steps: Sequence[StepRecord], owner: str) -> list[bool]:
        """Write several steps in one transaction (group commit); one flag per step."""

    def record_attempt(self, attempt: AttemptRecord) -> None: ...

    # the transactional outbox
    def claim_outbox(
        self, worker_id: str, now: float, until: float, limit: int
    ) -> list[OutboxRecord]:
        """Lease up to ``limit`` pending events to ``worker_id`` until ``until``, oldest
        first, in order per instance: only instances whose first pending event is due
        (``next_attempt_at <= now``) and not leased to another relayer whose lease runs,
        and for each such instance a prefix of its pending events."""

    def settle_outbox(self, worker_id: str, outcomes: Sequence[OutboxOutcome]) -> None:
        """Record what became of claimed events and end ``worker_id``'s lease on them."""

    def release_outbox(self, worker_id: str) -> int:
        """End ``worker_id``'s leases on the pending events it claimed (it is gone: they
        are anyone's now, as they were); how many."""

    def list_outbox(
        self, status: str | None = None, instance_id: str | None = None, limit: int = 1000
    ) -> list[OutboxRecord]:
        """Outbox events (of a status, of an instance), newest first."""

    def open_session(self, *, wait: bool = True) -> Session:
        """Begin a write transaction for a transactional activity.

        The engine calls this lazily, at the activity's first use of ``ctx.session``, so an
        activity that never touches the database never holds the writer lock. With
        ``wait=False`` (an async activity, on the event loop) a lock held by another writer
        raises ``DatabaseLockedError`` at once instead of waiting up to the busy timeout.
        """

    # waiting: timers, channels, events, groups, recur (see romancy_nb.engine.waiting)
    def take_message(
        self, instance_id: str, owner: str, wait: WaitSpec, seq: int, now: float
    ) -> StepRecord | None:
        """Consume the next message ``wait.channel`` holds for the instance and record
        ``wait``'s step with it, in one transaction; None (nothing written) if there is none.

        Raises ``ChannelNotSubscribedError`` without a subscription and ``LockLostError``
        if ``owner`` lost the lease.
        """

    def suspend(
        self,
        instance_id: str,
        owner: str,
        status: str,
        waits: Sequence[WaitSpec],
        seq: int,
        now: float,
    ) -> StepRecord | None:
        """In one transaction: register ``waits``, set ``status``, release the lease.

        If one wait is answered already (its timer is due, a message waits), record that
        step instead, keep the lease and return it: the caller replays at once.
        """

    def wake(self, instance_id: str, step_id: str, owner: str, now: float) -> WokenRun | None:
        """End a suspended instance's wait if it can end now, in one transaction.

        Consume the message (or note the timer), record the wait's step, drop the wait, set
        the instance running and give its lease to ``owner``; return the instance, its
        history and attempts as they are then (see :class:`WokenRun`). None, nothing
        written, if the instance is not waiting on that step, is leased, or has nothing to
        wake it.
        """

    def due_timers(self, now: float, workflows: Sequence[str], limit: int) -> list[Wakeup]:
        """Waiting instances of ``workflows`` whose timer (sleep or timeout) is due."""

    def pending_timers(self, instance_id: str) -> list[tuple[str, float]]:
        """(step id, deadline) of the instance's waits that have one, earliest first."""

    def next_timer_at(self, workflows: Sequence[str]) -> float | None:
        """The earliest timer of a waiting instance of ``workflows``."""

    def message_wakeups(
        self, after_id: int, workflows: Sequence[str], channel: str | None = None
    ) -> tuple[list[Wakeup], int]:
        """Waiting instances of ``workflows`` that listen on a channel which received a
        message with id above ``after_id`` (or on ``channel``), and the newest message id."""

    def scan_wakeups(self, now: float, workflows: Sequence[str], limit: int) -> list[Wakeup]:
        """Safety net: waiting instances that could be woken now. Callable from any thread."""

    def cancelled_while_waiting(self, workflows: Sequence[str]) -> list[tuple[str, str]]:
        """(instance_id, workflow_name) of waiting instances of ``workflows`` whose
        cancellation was requested (by a process that could not run it)."""

    def last_message_id(self) -> int: ...

    def subscribe(
        self, instance_id: str, owner: str, channel: str, mode: str, step: StepRecord
    ) -> None:
        """Subscribe and record ``step``, in one transaction.

        Raises ``ChannelModeConflictError`` (nothing written) if other instances listen on
        the channel in another mode, ``LockLostError`` if ``owner`` lost the lease.
        """

    def unsubscribe(self, instance_id: str, owner: str, channel: str, step: StepRecord) -> None: ...

    def get_subscription_mode(self, instance_id: str, channel: str) -> str | None: ...

    def publish(
        self, message: MessageRecord, step: StepRecord | None = None, owner: str | None = None
    ) -> int:
        """Store a message (and the publishing step, from a workflow) in one transaction.

        Returns its id, or 0 if the channel holds a message with that ``message_id``.
        """

    def delete_messages(self, before: float) -> int:
        """Retention: drop messages created before ``before``; how many were dropped."""

    def join_group(self, instance_id: str, owner: str, group: str, step: StepRecord) -> None: ...

    def leave_group(self, instance_id: str, owner: str, group: str, step: StepRecord) -> None: ...

    def group_members(self, group: str) -> list[str]: ...

    def recur(self, instance_id: str, owner: str, input_json: str, now: float) -> int:
        """Archive the history as a ``recurred`` run, drop waits, subscriptions and groups,
        and restart the instance with ``input_json`` (lease kept); the archived run number."""

    def archived_runs(self, instance_id: str) -> list[ArchivedRun]: ...

    def load_archived_history(self, instance_id: str, run_no: int) -> list[StepRecord]: ...

    def delete_archives(self, before: float) -> int:
        """Retention: drop archived runs that ended before ``before``."""

    # time travel (see romancy_nb.engine.travel)
    def cut_history(self, instance_id: str, owner: str, cut: HistoryCut, now: float) -> int:
        """Rewrite an instance's history and state in one transaction (rewind, rollback,
        retry, a divergence).

        Move the ``cut.archive`` steps into a new archived run, delete the instance's failed
        attempts and waits, change its subscriptions and groups, set ``cut.status`` (clearing
        output, error and any cancel request) and record ``cut.marker``. Returns the
        archived run's number (0 when nothing was archived). Raises ``LockLostError``,
        writing nothing, if ``owner`` does not hold the instance's lease.
        """

    def fork_instance(
        self,
        instance: InstanceRecord,
        steps: Sequence[StepRecord],
        subscriptions: Sequence[tuple[str, str]],
        groups: Sequence[str],
    ) -> bool:
        """Create ``instance`` with ``steps`` as its history, its subscriptions and its
        groups, in one transaction; False (nothing written) if the id exists already."""

    def load_waits(self, instance_id: str) -> list[WaitSpec]:
        """The unanswered waits of an instance (its timers, awaited events and messages),
        oldest first: what the notebook panel shows and can fire or answer."""

    # views: the notebook layer's DataFrames and ``%%sql`` read tables through this
    def read_table(self, name: str, where: Mapping[str, Any] | None = None) -> TableRows | None:
        """Every row of table ``name`` whose columns equal ``where``'s values (all rows
        without it); None if the store has no such table (yet).

        Names are the SQLite backend's table names (``workflow_instances``,
        ``workflow_history``, ``waits``, ``channel_messages``, ...), which every backend
        answers to; a user table in the same database may be read too. Raises
        ``ValueError`` for a column the table does not have.
        """

    def watch(self, on_change: Callable[[ChangeHint], None], interval: float) -> Watch:
        """Call ``on_change`` (from a thread) when another connection or process changed the
        newest message id or the earliest timer; checked every ``interval`` seconds."""
