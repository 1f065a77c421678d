"""``App``: the one object a script, a worker or a notebook holds.

It owns the store and the gate every engine call to it goes through, this process's worker
identity and lease, the thread pool for sync activities, and three collaborators:
:class:`~romancy_nb.engine.instances.Instances` (the runs of this process, recovery),
:class:`~romancy_nb.engine.wakeups.Waker` (ending waits) and the background sweep that
renews the lease, resumes orphaned instances and honours cancellations asked for by other
processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from romancy_nb.engine import channels, events, handlers, ids, leases, replayer
from romancy_nb.engine.commits import GroupCommitter
from romancy_nb.engine.compare import Comparison, pair_steps
from romancy_nb.engine.definitions import Workflow, check_divergence_policy
from romancy_nb.engine.failures import error_from_json
from romancy_nb.engine.gate import StoreGate
from romancy_nb.engine.handlers import EventReceipt, PreparedEvent
from romancy_nb.engine.hooks import Hooks, HookSet
from romancy_nb.engine.info import (
    InstanceInfo,
    InstancePage,
    StepInfo,
    parse_page_token,
)
from romancy_nb.engine.info import (
    page_token as make_page_token,
)
from romancy_nb.engine.instances import Instances, Listeners
from romancy_nb.engine.leadership import Leadership
from romancy_nb.engine.outbox import EventSender, OutboxRelay
from romancy_nb.engine.registry import Registry
from romancy_nb.engine.registry import registry as default_registry
from romancy_nb.engine.replayer import ReplayReport
from romancy_nb.engine.retry import RetryPolicy
from romancy_nb.engine.runner import WorkflowRun
from romancy_nb.engine.signals import EngineSignal, StoreFault
from romancy_nb.engine.travel import HistoryChange, TimeTravel, Undo
from romancy_nb.engine.wakeups import Waker, WakeSettings
from romancy_nb.errors import InvalidWorkflowState, WorkflowCancelled, WorkflowNotFound
from romancy_nb.store import (
    FINAL_STATUSES,
    InstanceQuery,
    InstanceRecord,
    StepRecord,
    Store,
    open_store,
)
from romancy_nb.store.protocol import (
    OUTBOX_STATUSES,
    WAITING_STATUSES,
    ArchivedRun,
    MessageRecord,
    OutboxRecord,
    Wakeup,
)

if TYPE_CHECKING:
    from starlette.applications import Starlette

log = logging.getLogger("romancy_nb")

_RAISING = ("failed", "cancelled", "diverged")
"""Outcomes of a run here that ``result`` raises at once (a divergence waits for a fix)."""


class App:
    """A romancy_nb application bound to one database.

    ``App("orders.db")`` opens (or creates) an APSW SQLite file; ``":memory:"`` keeps
    everything in memory; a ready :class:`~romancy_nb.store.Store` object is used as it is.
    Use ``async with App(...) as app:`` (or ``await app.open()`` / ``await app.close()``);
    ``start`` opens it on first use too. ``synchronous="FULL"`` makes every step survive
    power loss at the cost of an fsync per commit; steps of concurrent instances then share
    commits (``group_commit``, on by default in FULL).

    A lock held by another process, a full disk or an I/O error pauses the affected runs
    until the store is back (``busy_timeout`` bounds how long a transactional activity's
    session waits for the lock before its attempt is retried); it never fails a workflow.

    ``max_concurrent`` caps how many instances run in this process at once (None: no cap);
    beyond it, starts and wake-ups are left to other workers or to later. ``0`` makes a
    client that runs nothing. ``lease_seconds`` is how long a worker on another host may go
    without a heartbeat before its instances move to others (same host: at once).

    ``on_divergence`` is what a run does when its code no longer matches its history (a
    cell was edited): ``"error"`` stops it with a :class:`DeterminismViolation` until the
    code is fixed or the instance is rewound; ``"rewind"`` keeps every matched step,
    archives history from the first diverging step and re-executes from there. A
    workflow's own ``@rn.workflow(on_divergence=...)`` overrides it.

    ``broker_url``: where the outbox relayer posts the CloudEvents activities send with
    ``ctx.send_event`` (HTTP, structured mode; the ``http`` extra), or ``event_sender``: an
    :class:`~romancy_nb.engine.outbox.EventSender` of your own. One app per database relays
    (the ``outbox`` leader among those that have either), ``outbox_batch_size`` events at a
    time, looking every ``outbox_interval`` seconds (at once for events written here),
    retrying a failed delivery by ``outbox_retry`` (default: doubling from 1 s up to 5 min,
    100 attempts) before marking it failed. See :mod:`romancy_nb.engine.outbox`.

    ``hooks``: one :class:`~romancy_nb.engine.hooks.Hooks` or a sequence of them, told
    when runs start, resume, suspend and end and when activities run (tracing, metrics:
    ``romancy_nb.telemetry.OpenTelemetryHooks``); a hook that raises is logged and ignored.
    """

    def __init__(
        self,
        db: str | Path | Store = "romancy.db",
        *,
        default_retry: RetryPolicy | None = None,
        synchronous: str = "NORMAL",
        busy_timeout: float = 5.0,
        lease_seconds: float = 15.0,
        sweep_interval: float = 5.0,
        watch_interval: float | None = 0.002,
        message_retention: float | None = 7 * 86400.0,
        archive_retention: float | None = None,
        max_threads: int = 32,
        group_commit: bool | None = None,
        on_divergence: str = "error",
        max_concurrent: int | None = None,
        registry: Registry | None = None,
        hooks: Hooks | Sequence[Hooks] | None = None,
        broker_url: str | None = None,
        event_sender: EventSender | None = None,
        outbox_retry: RetryPolicy | None = None,
        outbox_batch_size: int = 100,
        outbox_interval: float = 1.0,
    ) -> None:
        settings = dict(locals())
        del settings["self"], settings["db"]
        self._settings = settings
        if max_concurrent is not None and (
            not isinstance(max_concurrent, int)
            or isinstance(max_concurrent, bool)
            or max_concurrent < 0
        ):
            raise ValueError(
                f"max_concurrent must be None (no limit) or an int >= 0, not {max_concurrent!r}"
            )
        self.max_concurrent = max_concurrent
        if synchronous not in ("NORMAL", "FULL", "EXTRA", "OFF"):
            raise ValueError("synchronous must be 'NORMAL', 'FULL', 'EXTRA' or 'OFF'")
        self.on_divergence = check_divergence_policy(on_divergence) or "error"
        self.hooks = HookSet.of(hooks)
        if broker_url is not None and event_sender is not None:
            raise ValueError("give broker_url or event_sender, not both")
        if not isinstance(outbox_batch_size, int) or outbox_batch_size < 1:
            raise ValueError(f"outbox_batch_size must be an int >= 1, not {outbox_batch_size!r}")
        self.broker_url = broker_url
        self._event_sender = event_sender
        self.outbox_retry = outbox_retry or RetryPolicy(100, 1.0, 2.0, 300.0)
        self.outbox_batch_size = outbox_batch_size
        self.outbox_interval = outbox_interval
        self._relay: OutboxRelay | None = None
        self.default_retry = default_retry
        self.registry = registry or default_registry
        self.lease_seconds = lease_seconds
        self.sweep_interval = sweep_interval
        # waiting (engine/wakeups.py): how often to look for other processes' changes
        # (None: sweeps only), and how long to keep messages and recurred runs (None: ever)
        self.watch_interval = watch_interval
        self.message_retention = message_retention
        self.archive_retention = archive_retention
        self._store_options = {
            "synchronous": synchronous,
            "busy_timeout": busy_timeout,
            "wait_for_locks": False,
        }
        self._max_threads = max_threads
        if isinstance(db, str | Path):
            self.url = str(db)
            self._given_store: Store | None = None
            self.store: Store = open_store(self.url, **self._store_options)
        else:
            self.url = db.url
            self._given_store = db
            self.store = db
        self._store_open = True
        # A network store: one gate thread per connection a busy worker keeps in flight.
        self.gate = StoreGate(inline=self.store.inline, threads=1 if self.store.inline else 8)
        self._migrated = False
        self._worker = leases.new_worker()
        self.executor: ThreadPoolExecutor | None = None
        full = synchronous in ("FULL", "EXTRA")
        self._group_commit = full if group_commit is None else group_commit
        self._listeners = Listeners()
        self._instances: Instances | None = None
        self._travel: TimeTravel | None = None
        self._leadership: Leadership | None = None
        self._opening: asyncio.Lock | None = None
        self._waker: Waker | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def copy(self, db: str | Path | None = None, **changes: Any) -> App:
        """A new, closed App with this one's registry and settings, changed by ``changes``
        (the ``App`` keyword arguments) and bound to ``db`` (default: the same URL).

        For a worker that serves an application module's app on another database, or with
        another ``max_concurrent``: ``romancy-nb worker --app mod:app --db URL``.
        """
        unknown = set(changes) - set(self._settings)
        if unknown:
            raise TypeError(f"App.copy() got unknown settings: {', '.join(sorted(unknown))}")
        return App(self.url if db is None else db, **{**self._settings, **changes})

    # lifecycle

    @property
    def worker_id(self) -> str:
        return self._worker.worker_id

    @property
    def is_open(self) -> bool:
        return self._loop is not None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the app was opened on (None while closed): calls into an open app
        belong on it, e.g. from a widget handler that runs on another thread's loop."""
        return self._loop

    @property
    def group_commit(self) -> bool:
        """Whether steps of concurrent instances share commits (default: in FULL modes)."""
        return self._group_commit

    def running(self) -> list[str]:
        """Ids of the instances that have a run in this process right now.

        A waiting instance has none: it holds no coroutine or lease until it is woken.
        """
        return [] if self._instances is None else self._instances.running()

    async def sweep(self) -> int:
        """Run the waiting safety net now (wake what can be woken, apply retention) instead
        of at the next ``sweep_interval``; returns how many instances woke."""
        await self._ensure_open()
        assert self._waker is not None
        return await self._waker.sweep()

    def ensure_schema(self) -> None:
        """Open the store if it was closed and apply pending migrations, once.

        For reads without opening the app (views, the CLI); ``open()`` does it too.
        """
        if not self._store_open:
            if self._given_store is not None:
                raise RuntimeError("this App's store was closed; give the App a new store")
            self.store = open_store(self.url, **self._store_options)
            self._store_open = True
            self._migrated = False
        if not self._migrated:
            self.store.migrate()
            self._migrated = True

    async def open(self) -> App:
        """Apply migrations, register this worker, resume orphaned instances, start sweeps.

        Opening an open app does nothing; a second ``open`` while the first one still waits
        on the store (a notebook cell's start right after ``%romancy config``) waits for it.
        """
        if self._loop is not None:
            return self
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._loop is None:
                await self._open()
        return self

    async def _open(self) -> None:
        await self._call(self.ensure_schema, blocking=True)
        worker = leases.new_worker()
        await self._call(self.store.register_worker, worker)
        self._worker = worker
        loop = self._loop = asyncio.get_running_loop()
        self.executor = ThreadPoolExecutor(self._max_threads, thread_name_prefix="romancy")
        committer = None
        if self._group_commit:
            committer = GroupCommitter(self.store, self.gate, worker.worker_id, loop)
        self._instances = Instances(
            store=self.store,
            gate=self.gate,
            registry=self.registry,
            worker_id=worker.worker_id,
            default_retry=self.default_retry,
            executor=self.executor,
            committer=committer,
            on_divergence=self.on_divergence,
            lease_seconds=self.lease_seconds,
            listeners=self._listeners,
            loop=loop,
            max_concurrent=self.max_concurrent,
            hooks=self.hooks,
        )
        settings = WakeSettings(
            self.watch_interval, self.sweep_interval, self.message_retention, self.archive_retention
        )
        self._travel = TimeTravel(self._instances)
        self._leadership = Leadership(self.store, self.gate, worker.worker_id, self.lease_seconds)
        try:
            await self._lead()
            await self._instances.recover()
            self._waker = self._instances.waker = Waker(
                self._instances, settings, loop, self._leadership
            )
            await self._waker.start()
            self._start_relay(loop)
        except BaseException:
            await self.close()
            raise
        self._sweeper = loop.create_task(self._sweep_forever(), name="romancy-sweeper")

    def _start_relay(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stand for the outbox relayer if this app has somewhere to send events."""
        sender = self._event_sender
        if sender is None and self.broker_url is not None:
            from romancy_nb.http.relay import HttpEventSender  # the edge, loaded when asked for

            sender = HttpEventSender(self.broker_url)
        if sender is None or self._instances is None:
            return
        relay = self._relay = OutboxRelay(
            self.store, self.gate, self.worker_id, sender, retry=self.outbox_retry,
            batch_size=self.outbox_batch_size, interval=self.outbox_interval,
            lease_seconds=self.lease_seconds,
        )  # fmt: skip
        self._instances.relay = relay
        relay.start(loop)

    async def drain(self, timeout: float) -> list[str]:
        """Take no more work, then wait up to ``timeout`` seconds for the runs of this
        process to finish or suspend (a graceful shutdown: ``romancy-nb worker`` on
        SIGTERM); returns the ids still running. ``close()`` then releases those, and
        other workers resume them from their last recorded step."""
        instances = await self._ensure_open()
        instances.drain()
        await self._lead()  # steps down: another worker runs the sweeps from now on
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (tasks := instances.tasks()) and (left := deadline - loop.time()) > 0:
            await asyncio.wait(tasks, timeout=left)
        return instances.running()

    async def close(self) -> None:
        """Stop sweeps and running instances (they resume at the next start), release all."""
        if self._loop is None:  # used only for management calls: just close the store
            if self._store_open:
                self.store.close()
                self._store_open = False
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        waker, self._waker = self._waker, None
        if waker is not None:
            await waker.stop()
        relay, self._relay = self._relay, None
        if relay is not None:
            await relay.close()
        if self._instances is not None:
            await self._instances.close()
            self._instances = None
        if self._leadership is not None:
            with contextlib.suppress(Exception, StoreFault):  # its lease expires anyway
                await self._leadership.resign()
            self._leadership = None
        with contextlib.suppress(Exception):  # a failing store still closes
            self.store.remove_worker(self.worker_id)
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = None
        self._loop = None
        self._opening = None  # a Lock belongs to its loop: the next open may be on another
        self.gate.close()
        self.store.close()
        self._store_open = False

    async def __aenter__(self) -> App:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _ensure_open(self) -> Instances:
        if self._loop is None:
            await self.open()
        elif self._loop is not asyncio.get_running_loop():
            raise RuntimeError(
                "this App was opened on another event loop; open one App per loop "
                "(or close it first)"
            )
        assert self._instances is not None
        return self._instances

    async def _call(self, method: Callable[..., Any], *args: Any, blocking: bool = False) -> Any:
        """A store call from the app's own bookkeeping (``blocking``: one that may wait on a
        lock itself, made from the gate's thread); a non-transient fault is raised as the
        :class:`~romancy_nb.errors.StoreError` it is (there is no run to pause)."""
        return await self.gate.request(method, *args, blocking=blocking)

    # listeners

    def add_listener(self, callback: Callable[[str, StepRecord | None], None]) -> None:
        """Call ``callback(instance_id, step)`` after each step this process records, and
        ``callback(instance_id, None)`` when a run of an instance starts or ends here (its
        status may have changed).

        For live views (the notebook's widgets). It is called on the event loop, or on a
        worker thread for a step recorded by a sync transactional activity: keep it short
        and thread-safe. An exception in a listener is logged and ignored.
        """
        self._listeners.add(callback)

    def remove_listener(self, callback: Callable[[str, StepRecord | None], None]) -> None:
        self._listeners.remove(callback)

    # starting and awaiting

    def _workflow(self, workflow: Workflow[Any, Any] | str) -> Workflow[Any, Any]:
        if isinstance(workflow, Workflow):
            return workflow
        if isinstance(workflow, str):
            return self.registry.workflow(workflow)
        raise TypeError(
            f"start() takes a @workflow function or its name, not {type(workflow).__name__}"
        )

    async def start(
        self,
        workflow: Workflow[Any, Any] | str,
        /,
        *args: Any,
        instance_id: str | None = None,
        **kwargs: Any,
    ) -> str:
        """Start an instance and return its id at once (the workflow runs in the background).

        Starting with an ``instance_id`` that exists already starts nothing and returns the
        id, so a start can be retried safely (an idempotency key).

        The instance runs here unless this app is at its ``max_concurrent``; then it is
        stored for whichever worker has room first (this one included, when a run ends).
        ``App(url, max_concurrent=0)`` is a client: it starts instances for the workers.
        """
        wf = self._workflow(workflow)
        values = wf.shape.validate_input(wf.shape.bind(args, kwargs))
        iid = str(uuid.uuid4()) if instance_id is None else ids.validate_instance_id(instance_id)
        return await self._start(wf, values, iid)

    async def _start(self, wf: Workflow[Any, Any], values: tuple[Any, ...], iid: str) -> str:
        """Start ``wf`` with checked arguments as ``iid`` (nothing if ``iid`` exists)."""
        instances = await self._ensure_open()
        input_json = wf.shape.encode_input(values)
        now = time.time()
        record = InstanceRecord(
            iid, wf.name, "running", input_json, None, None, self.worker_id, None,
            wf.code_version, now, now,
        )  # fmt: skip
        if instances.capacity() < 1:  # full (or a client, max_concurrent=0): any worker's
            if await self._call(self.store.create_instance, record._replace(lock_owner=None)):
                return iid
        else:
            with instances.claiming(iid) as free:
                created = free and await self._call(self.store.create_instance, record)
                if created:
                    instances.launch(
                        WorkflowRun(instances, wf, iid, input_json=input_json, args=values)
                    )
                    return iid
        existing = await self._call(self.store.get_instance, iid)
        if existing is not None and existing.workflow_name != wf.name:
            raise InvalidWorkflowState(
                f"instance id {iid!r} already belongs to workflow "
                f"{existing.workflow_name!r}, not {wf.name!r}",
                instance_id=iid,
            )
        return iid

    async def result(self, instance_id: str, *, timeout: float | None = None) -> Any:
        """Wait for the instance to end; return its result or raise its error.

        A failed instance raises the workflow's own error (rebuilt from the store when it
        ran elsewhere); a cancelled one raises :class:`WorkflowCancelled`.
        """
        instances = await self._ensure_open()
        instance_id = ids.validate_instance_id(instance_id)
        try:
            return await self._await_result(instances, instance_id, timeout)
        finally:
            instances.drop_waiter(instance_id)

    async def _await_result(
        self, instances: Instances, instance_id: str, timeout: float | None
    ) -> Any:
        async with asyncio.timeout(timeout):
            delay = 0.005
            while True:
                run = instances.get(instance_id)
                task = run.task if run is not None else None
                if task is not None:
                    if not task.done():
                        await _finished(task)
                    failed = task.cancelled() or task.exception() is not None
                    outcome = None if failed else task.result()
                    if outcome is not None:
                        if outcome.status == "completed":
                            return outcome.value
                        if outcome.error is not None and outcome.status in _RAISING:
                            raise outcome.error
                        if instances.get(instance_id) is not run:
                            continue  # a new run took over (woken, recurred)
                    # suspended, stopped or paused: awaiting the finished task again would
                    # never yield to the loop (its done-callback has not removed it yet)
                record = await self._call(self.store.get_instance, instance_id)
                if record is None:
                    raise WorkflowNotFound(f"no instance {instance_id!r}", instance_id=instance_id)
                if record.status in FINAL_STATUSES:
                    return self._final_result(record)
                diverged = instances.divergence(instance_id)
                if diverged is not None and instances.get(instance_id) is None:
                    raise diverged  # its run here ended diverged (before this call, even)
                # Woken at once when the instance is launched here (resumed after a wait);
                # the growing delay is for instances that run in another process.
                waiter = instances.launch_waiter(instance_id)
                with contextlib.suppress(TimeoutError):  # not wait_for: it may swallow a cancel
                    async with asyncio.timeout(delay):
                        await waiter.wait()
                delay = min(delay * 2, 0.25)

    def _final_result(self, record: InstanceRecord) -> Any:
        if record.status == "completed":
            wf = self.registry.find_workflow(record.workflow_name)
            if wf is None:
                return InstanceInfo.from_record(record).output
            return wf.shape.decode_result(record.output, f"instance {record.instance_id}")
        if record.status == "cancelled":
            raise WorkflowCancelled(record.instance_id, record.cancel_reason)
        raise error_from_json(record.error or '{"type": "?", "message": "unknown error"}')

    def run(self, workflow: Workflow[Any, Any] | str, /, *args: Any, **kwargs: Any) -> Any:
        """Start the app, run one instance to completion and return its result (no loop).

        For scripts. Inside a running event loop (a notebook), use ``await app.start(...)``
        and ``await app.result(...)`` instead.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "app.run() cannot be used inside a running event loop (a notebook or an "
                "async function): use 'await app.start(...)' then 'await app.result(...)'"
            )

        async def main() -> Any:
            async with self:
                return await self.result(await self.start(workflow, *args, **kwargs))

        return asyncio.run(main())

    async def replay(self, instance_id: str) -> ReplayReport:
        """Re-run an instance against its history with the current code; write nothing.

        Every step is answered from history (one bulk read) and checked for determinism.
        The report says whether the code reached its end, stopped at the first step history
        does not hold, diverged (with the :class:`DeterminismViolation` and its diff) or
        raised — the engine side of replay debugging.
        """
        self.ensure_schema()
        return await replayer.replay(self, instance_id)

    # time travel (engine/travel.py)

    async def _time_travel(self) -> TimeTravel:
        await self._ensure_open()
        assert self._travel is not None
        return self._travel

    async def rewind(self, instance_id: str, *, to: str | None) -> HistoryChange:
        """Go back to step ``to``: history after it is archived (never deleted) and the
        instance resumes from there with the current code. No compensation runs.

        ``to=None`` goes back to the start. A completed, failed or cancelled instance is
        reopened; steps that were compensated execute again. Refused
        (:class:`InvalidWorkflowState`) while another worker runs the instance or while it
        is compensating; :class:`StepNotFound` for a step it does not have.
        """
        return await (await self._time_travel()).rewind(instance_id, to)

    async def rollback(self, instance_id: str, *, to: str | None) -> HistoryChange:
        """Undo the steps after ``to``: their compensations run in reverse order (durably:
        a crash in the middle resumes the rollback), their steps are archived, and the
        instance resumes from ``to``. Returns once the compensations have run.

        Rolling back a completed, failed or cancelled instance reopens it. If a
        compensation fails for good, the instance ends ``failed`` instead of resuming.
        ``rollback_plan`` says beforehand which compensations would run.
        """
        return await (await self._time_travel()).rollback(instance_id, to)

    async def rollback_plan(self, instance_id: str, *, to: str | None) -> list[Undo]:
        """The compensations ``rollback(instance_id, to=...)`` would run, in order."""
        return await (await self._time_travel()).rollback_plan(instance_id, to)

    async def retry(self, instance_id: str) -> HistoryChange:
        """Resume a failed instance from the step that failed (after a fix or an outage),
        keeping every earlier result; steps its failure compensated execute again."""
        return await (await self._time_travel()).retry(instance_id)

    async def fork(
        self,
        original: str,
        /,
        *,
        at: str | None = None,
        input: Mapping[str, Any] | None = None,
        instance_id: str | None = None,
    ) -> str:
        """Start a new instance whose history is a copy of ``original``'s up to step ``at``
        (all of it when None); returns its id. The original is not touched.

        ``input`` replaces some or all of the workflow's arguments, by parameter name.
        Recorded steps that depended on them then diverge: with ``on_divergence="rewind"``
        they execute again, with ``"error"`` the fork stops there. The new instance records
        where it came from (``forked_from``, ``forked_at``).
        """
        return await (await self._time_travel()).fork(original, at, input, instance_id)

    def compare(self, a: str, b: str) -> Comparison:
        """Two instances' histories side by side, step by step (an original and its fork,
        say): each step's status, input and output in both, and what differs."""
        first, second = self._record(a), self._record(b)
        return Comparison(
            first.instance_id,
            second.instance_id,
            first.status,
            second.status,
            pair_steps(self.store.load_history(a), self.store.load_history(b)),
        )

    def archived_runs(self, instance_id: str) -> list[ArchivedRun]:
        """History the instance no longer replays, newest last: recurred runs and the
        steps cut off by rewinds, rollbacks, retries and divergences."""
        self._record(instance_id)
        return self.store.archived_runs(instance_id)

    def get_archived_history(self, instance_id: str, run_no: int) -> list[StepInfo]:
        """The steps of one archived run (see :meth:`archived_runs`)."""
        self._record(instance_id)
        steps = self.store.load_archived_history(instance_id, run_no)
        return [StepInfo.from_record(step) for step in steps]

    # cancelling

    async def cancel(self, instance_id: str, reason: str = "cancelled") -> str:
        """Cancel an instance: its compensations run in reverse order; returns the status.

        If another live worker runs the instance, the request is stored and that worker
        cancels it at its next sweep; the status returned is then the current one.
        """
        instances = await self._ensure_open()
        record = self._record(instance_id)
        if record.status in FINAL_STATUSES:
            raise InvalidWorkflowState(
                f"instance {instance_id!r} is already {record.status}; nothing to cancel",
                instance_id=instance_id,
                status=record.status,
            )
        await self._call(self.store.request_cancel, record.instance_id, reason)
        # A run here that was suspending as the request came may end waiting instead of
        # cancelled: then the instance is resumed here, and honours the stored request.
        for _ in range(3):
            run = instances.get(record.instance_id)
            if run is not None:
                run.cancel(reason)
            else:
                run = await self._resume_to_cancel(instances, self._record(instance_id))
            if run is None or run.task is None:
                break
            await asyncio.gather(asyncio.shield(run.task), return_exceptions=True)
            if self._record(instance_id).status not in WAITING_STATUSES:
                break
        return self._record(instance_id).status

    async def _resume_to_cancel(
        self, instances: Instances, record: InstanceRecord
    ) -> WorkflowRun | None:
        """Take the instance (unless a live worker holds it) and run it here, so that it
        honours its cancel request; None if another worker has it."""
        with instances.claiming(record.instance_id) as free:
            if not free or not await instances.claim_if_free(record):
                return None
            wf = self.registry.find_workflow(record.workflow_name)
            if wf is None:
                await self._call(self.store.release_instance, record.instance_id, self.worker_id)
                raise WorkflowNotFound(
                    f"cannot cancel {record.instance_id!r} here: its workflow "
                    f"{record.workflow_name!r} is not defined in this process",
                    instance_id=record.instance_id,
                )
            run = await instances.resumed_run(wf, self._record(record.instance_id))
            instances.launch(run)
            return run

    # sweeps

    async def _sweep_forever(self) -> None:
        tick = max(0.05, min(self.sweep_interval, self.lease_seconds / 3))
        while True:
            await asyncio.sleep(tick)
            instances = self._instances
            if instances is None:
                return
            try:
                # the store may wait for the lock on the heartbeat: never on the loop
                await self.gate.call_blocking(self.store.heartbeat, self.worker_id, time.time())
                await instances.honour_cancels()
                await instances.recover()
                await self._lead()
            except (Exception, StoreFault):
                log.exception("background sweep failed; retrying at the next tick")

    async def _lead(self) -> None:
        """Stand for leadership (renew it while leading) and, as the leader, forget the
        workers that are gone. A client or a draining app, which runs nothing, does not
        stand: its sweeps would wake nothing (and it resigns if it led)."""
        leadership, instances = self._leadership, self._instances
        if leadership is None or instances is None:
            return
        if instances.max_concurrent == 0:
            await leadership.resign()
        elif await leadership.renew():
            await instances.forget_dead_workers()

    # events, messages, timers and groups (engine/events.py, channels.py, wakeups.py)

    async def _post(self, message: MessageRecord) -> str:
        self.ensure_schema()
        await self._call(self.store.publish, message)
        if self._waker is not None:  # wake the waiting subscribers here and now
            await self._waker.deliver_channel(message.channel)
        return message.message_id

    async def fire_timer(self, instance_id: str, step_id: str | None = None) -> bool:
        """Fire the instance's pending timer now, as if it were due ("fire now" in a panel).

        A sleep returns at once (its step records the deadline as the firing time); a wait
        with a timeout times out. ``step_id`` picks one timer, else the earliest. False if
        the instance has no pending timer here (it woke already, or waits without one).
        """
        await self._ensure_open()
        timers = await self._call(self.store.pending_timers, instance_id)
        if step_id is not None:
            timers = [timer for timer in timers if timer[0] == step_id]
        record = await self._call(self.store.get_instance, instance_id)
        if not timers or record is None or self._waker is None:
            return False
        chosen, fire_at = timers[0]
        wakeup = Wakeup(instance_id, record.workflow_name, chosen)
        return await self._waker.wake(wakeup, max(time.time(), fire_at))

    async def send_event(
        self,
        event_type: str,
        data: Any = None,
        *,
        source: str = "romancy_nb",
        id: str | None = None,
        time: datetime | None = None,
        subject: str | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> str:
        """Send an event; instances subscribed to ``event_type`` receive it. Returns its id.

        Waiting instances defined in this process resume at once; other processes on the
        same database notice within milliseconds. See :mod:`romancy_nb.engine.events` for
        which instances receive it. If ``event_type`` names a workflow registered with
        ``event_handler=True``, the event also starts it with ``data`` as its input, as
        instance ``"<type>:<id>"`` (see :mod:`romancy_nb.engine.handlers`). Bad input (an
        unserializable ``data``, a naive ``time``, data that does not fit the handler's
        parameters) raises and stores nothing; a repeated ``id`` is stored once and starts
        nothing new.
        """
        prepared = self.prepare_event(
            event_type, data, source=source, id=id, time=time, subject=subject,
            extensions=extensions,
        )  # fmt: skip
        return (await self.deliver_event(prepared)).id

    def prepare_event(
        self,
        event_type: str,
        data: Any = None,
        *,
        source: str = "romancy_nb",
        id: str | None = None,
        time: datetime | None = None,
        subject: str | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> PreparedEvent:
        """Check and encode an event (and the event-handler start it asks for) without
        storing anything: raises on bad input. For ingress that checks a whole batch
        before it stores any of it; ``deliver_event`` then stores it."""
        message = events.event_message(
            event_type, data, source=source, id=id, time=time, subject=subject,
            extensions=extensions,
        )  # fmt: skip
        event_id = message.message_id
        start = handlers.handler_start(self.registry, event_type, event_id, data)
        return PreparedEvent(event_type, event_id, message, start)

    async def deliver_event(self, prepared: PreparedEvent) -> EventReceipt:
        """Store a prepared event, wake its subscribers and start its event-handler
        workflow if it names one; safe to repeat (the event id is the idempotency key)."""
        start = prepared.start
        instance_id = None
        if start is not None:
            instance_id = await self._start(start.workflow, start.args, start.instance_id)
        self.ensure_schema()
        stored = await self._call(self.store.publish, prepared.message)
        if self._waker is not None and stored:
            await self._waker.deliver_channel(prepared.message.channel)
        return EventReceipt(prepared.type, prepared.id, instance_id, duplicate=not stored)

    async def publish(
        self, channel: str, data: Any, *, metadata: dict[str, Any] | None = None
    ) -> str:
        """Publish a message on ``channel`` from outside any workflow; returns its id."""
        return await self._send(channel, data, metadata, None, "published")

    async def send_to(
        self,
        instance_id: str,
        channel: str,
        data: Any,
        *,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Send a message to one instance (its ``direct`` subscription on ``channel``)."""
        ids.validate_instance_id(instance_id)
        return await self._send(channel, data, metadata, instance_id, "sent")

    async def _send(
        self,
        channel: str,
        data: Any,
        metadata: dict[str, Any] | None,
        target: str | None,
        verb: str,
    ) -> str:
        channels.check_name("the channel", channel)
        return await self._post(
            channels.new_message(
                channel,
                channels.encode_data(data, f"the data {verb} on channel {channel!r}"),
                channels.encode_metadata(metadata),
                target=target,
            )
        )

    async def ping(self) -> None:
        """One cheap read of the store through the gate; raises the
        :class:`~romancy_nb.errors.StoreError` if it cannot be read (readiness probes)."""
        self.ensure_schema()
        await self._call(self.store.get_instance, "")

    def asgi(self, *, token: str | None = None, max_body: int | None = None) -> Starlette:
        """An ASGI app (Starlette) that receives CloudEvents over HTTP for this app: mount
        it in any ASGI server or framework, or run ``romancy-nb serve``. ``token``: the
        bearer token requests must carry; ``max_body``: the largest body, in bytes.
        Needs the ``http`` extra; see :mod:`romancy_nb.http.ingress`."""
        from romancy_nb.http import ingress  # the edge, loaded only when asked for

        limit = ingress.DEFAULT_MAX_BODY if max_body is None else max_body
        return ingress.create_app(self, token=token, max_body=limit)

    def list_outbox(
        self, *, status: str | None = None, instance_id: str | None = None, limit: int = 1000
    ) -> list[OutboxRecord]:
        """The outbox's events (``ctx.send_event``), newest first: ``pending``,
        ``delivered`` or ``failed``, with their attempts and last error."""
        self.ensure_schema()
        if status is not None and status not in OUTBOX_STATUSES:
            raise ValueError(f"status must be one of {', '.join(OUTBOX_STATUSES)}, not {status!r}")
        return self.store.list_outbox(status, instance_id, limit)

    def get_group_members(self, group: str) -> list[str]:
        """The ids of the instances that are members of ``group``, oldest member first."""
        self.ensure_schema()
        return self.store.group_members(group)

    # management

    def _record(self, instance_id: str) -> InstanceRecord:
        self.ensure_schema()
        record = self.store.get_instance(ids.validate_instance_id(instance_id))
        if record is None:
            raise WorkflowNotFound(f"no instance {instance_id!r}", instance_id=instance_id)
        return record

    def get_instance(self, instance_id: str) -> InstanceInfo:
        """The instance's current state; :class:`WorkflowNotFound` if there is none."""
        return InstanceInfo.from_record(self._record(instance_id))

    def get_history(self, instance_id: str) -> list[StepInfo]:
        """Every recorded step of the instance, in the order they were recorded."""
        self._record(instance_id)
        return [StepInfo.from_record(step) for step in self.store.load_history(instance_id)]

    def list_instances(
        self,
        *,
        workflow: str | None = None,
        status: str | None = None,
        instance_id: str | None = None,
        limit: int = 100,
        page_token: str | None = None,
    ) -> InstancePage:
        """Instances, newest first, one page at a time (``next_page_token`` for more)."""
        self.ensure_schema()
        if limit < 1:
            raise ValueError("limit must be at least 1")
        after = parse_page_token(page_token) if page_token else None
        records = self.store.list_instances(
            InstanceQuery(workflow, status, instance_id, None, after, limit + 1)
        )
        more = len(records) > limit
        records = records[:limit]
        token = make_page_token(records[-1]) if more else None
        return InstancePage([InstanceInfo.from_record(r) for r in records], token)

    def find_instances(
        self,
        input_equals: Mapping[str, Any],
        *,
        workflow: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[InstanceInfo]:
        """Instances whose stored input matches every ``dot.path: value`` pair.

        Paths start at the workflow's parameter names: for ``order_flow(ctx, order)``,
        ``{"order.customer.id": 7}``. Values may be strings, numbers, booleans or None.
        """
        self.ensure_schema()
        records = self.store.list_instances(
            InstanceQuery(workflow, status, None, dict(input_equals), None, limit)
        )
        return [InstanceInfo.from_record(r) for r in records]


async def _finished(task: asyncio.Task[Any]) -> None:
    """Wait for a run's task to end without cancelling it (``result`` may be cancelled or
    time out) and without raising what ended it."""
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.cancelled():
            raise  # it is the waiter that was cancelled, not the run
    except (Exception, EngineSignal):  # the run's own error: the caller reads the task
        pass
