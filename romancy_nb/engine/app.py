"""``App``: the one object a script, a worker or a notebook holds.

It owns the store, this process's worker identity and lease, the thread pool for sync
activities, and the background sweep that renews the lease, resumes orphaned instances and
honours cancellations asked for by other processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from romancy_nb.engine import ids, leases, replayer
from romancy_nb.engine.commits import GroupCommitter
from romancy_nb.engine.definitions import Workflow
from romancy_nb.engine.failures import error_from_json
from romancy_nb.engine.info import (
    InstanceInfo,
    InstancePage,
    StepInfo,
    parse_page_token,
)
from romancy_nb.engine.info import (
    page_token as make_page_token,
)
from romancy_nb.engine.registry import Registry
from romancy_nb.engine.registry import registry as default_registry
from romancy_nb.engine.replayer import ReplayReport
from romancy_nb.engine.retry import RetryPolicy
from romancy_nb.engine.runner import Outcome, WorkflowRun
from romancy_nb.engine.wakeups import WaitingApp
from romancy_nb.errors import InvalidWorkflowState, WorkflowCancelled, WorkflowNotFound
from romancy_nb.store import (
    FINAL_STATUSES,
    InstanceQuery,
    InstanceRecord,
    StepRecord,
    Store,
    open_store,
)

log = logging.getLogger("romancy_nb")


class App(WaitingApp):
    """A romancy_nb application bound to one database.

    ``App("orders.db")`` opens (or creates) an APSW SQLite file; ``":memory:"`` keeps
    everything in memory. Use ``async with App(...) as app:`` (or ``await app.open()`` /
    ``await app.close()``); ``start`` opens it on first use too. ``synchronous="FULL"``
    makes every step survive power loss at the cost of an fsync per commit; steps of
    concurrent instances then share commits (``group_commit``, on by default in FULL).
    """

    def __init__(
        self,
        db: str | Path = "romancy.db",
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
        registry: Registry | None = None,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL", "EXTRA", "OFF"):
            raise ValueError("synchronous must be 'NORMAL', 'FULL', 'EXTRA' or 'OFF'")
        self.url = str(db)
        self.default_retry = default_retry
        self.registry = registry or default_registry
        self.lease_seconds = lease_seconds
        self.sweep_interval = sweep_interval
        # waiting (engine/wakeups.py): how often to look for other processes' changes
        # (None: sweeps only), and how long to keep messages and recurred runs (None: ever)
        self.watch_interval = watch_interval
        self.message_retention = message_retention
        self.archive_retention = archive_retention
        self._store_options = {"synchronous": synchronous, "busy_timeout": busy_timeout}
        self._max_threads = max_threads
        self.store: Store = open_store(self.url, **self._store_options)
        self._store_open = True
        self._migrated = False
        self._worker = leases.new_worker()
        self.executor: ThreadPoolExecutor | None = None
        full = synchronous in ("FULL", "EXTRA")
        self._group_commit = full if group_commit is None else group_commit
        self.committer: GroupCommitter | None = None
        self._runs: dict[str, WorkflowRun] = {}
        self._launch_waiters: dict[str, asyncio.Event] = {}
        self._listeners: list[Callable[[str, StepRecord | None], None]] = []
        self._diverged: dict[str, int] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # lifecycle

    @property
    def worker_id(self) -> str:
        return self._worker.worker_id

    @property
    def is_open(self) -> bool:
        return self._loop is not None

    def _ensure_schema(self) -> None:
        if not self._store_open:
            self.store = open_store(self.url, **self._store_options)
            self._store_open = True
            self._migrated = False
        if not self._migrated:
            self.store.migrate()
            self._migrated = True

    async def open(self) -> App:
        """Apply migrations, register this worker, resume orphaned instances, start sweeps."""
        if self._loop is not None:
            return self
        self._ensure_schema()
        worker = leases.new_worker()
        self.store.register_worker(worker)  # may fail (locked): then nothing is half-open
        self._worker = worker
        self._loop = asyncio.get_running_loop()
        self.executor = ThreadPoolExecutor(self._max_threads, thread_name_prefix="romancy")
        if self._group_commit:
            self.committer = GroupCommitter(self.store, worker.worker_id, self._loop)
        try:
            self._recover()
        except BaseException:
            await self.close()
            raise
        self._start_waiting()
        self._sweeper = self._loop.create_task(self._sweep_forever(), name="romancy-sweeper")
        return self

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
        await self._stop_waiting()
        tasks = [run.task for run in self._runs.values() if run.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._runs.clear()
        self.store.remove_worker(self.worker_id)
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = None
        self.committer = None
        self._loop = None
        self.store.close()
        self._store_open = False

    async def __aenter__(self) -> App:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _ensure_open(self) -> None:
        if self._loop is None:
            await self.open()
        elif self._loop is not asyncio.get_running_loop():
            raise RuntimeError(
                "this App was opened on another event loop; open one App per loop "
                "(or close it first)"
            )

    # listeners

    def add_listener(self, callback: Callable[[str, StepRecord | None], None]) -> None:
        """Call ``callback(instance_id, step)`` after each step this process records, and
        ``callback(instance_id, None)`` when a run of an instance starts or ends here (its
        status may have changed).

        For live views (the notebook's widgets). It is called on the event loop, or on a
        worker thread for a step recorded by a sync transactional activity: keep it short
        and thread-safe. An exception in a listener is logged and ignored.
        """
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[str, StepRecord | None], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    def _notify(self, instance_id: str, step: StepRecord | None = None) -> None:
        for callback in list(self._listeners):
            try:
                callback(instance_id, step)
            except Exception:
                log.exception("listener %r failed; ignored", callback)

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
        """
        await self._ensure_open()
        wf = self._workflow(workflow)
        shape = wf.shape
        values = shape.validate_input(shape.bind(args, kwargs))
        input_json = shape.encode_input(values)
        iid = str(uuid.uuid4()) if instance_id is None else ids.validate_instance_id(instance_id)
        now = time.time()
        record = InstanceRecord(
            iid,
            wf.name,
            "running",
            input_json,
            None,
            None,
            self.worker_id,
            None,
            wf.code_version,
            now,
            now,
        )
        if not self.store.create_instance(record):
            existing = self.store.get_instance(iid)
            if existing is not None and existing.workflow_name != wf.name:
                raise InvalidWorkflowState(
                    f"instance id {iid!r} already belongs to workflow "
                    f"{existing.workflow_name!r}, not {wf.name!r}",
                    instance_id=iid,
                )
            return iid
        self._launch(WorkflowRun(self, wf, iid, input_json=input_json, args=values))
        return iid

    def _launch(self, run: WorkflowRun) -> None:
        assert self._loop is not None
        run.task = self._loop.create_task(run.run(), name=f"romancy:{run.instance_id}")
        self._runs[run.instance_id] = run
        run.task.add_done_callback(lambda task, run=run: self._finished(run, task))
        waiter = self._launch_waiters.pop(run.instance_id, None)
        if waiter is not None:
            waiter.set()
        self._notify(run.instance_id)

    def _finished(self, run: WorkflowRun, task: asyncio.Task[Outcome]) -> None:
        if self._runs.get(run.instance_id) is run:
            del self._runs[run.instance_id]
        self._notify(run.instance_id)
        if task.cancelled():
            return
        outcome = task.result()
        if outcome.status == "diverged":
            self._diverged[run.instance_id] = self.registry.generation

    async def result(self, instance_id: str, *, timeout: float | None = None) -> Any:
        """Wait for the instance to end; return its result or raise its error.

        A failed instance raises the workflow's own error (rebuilt from the store when it
        ran elsewhere); a cancelled one raises :class:`WorkflowCancelled`.
        """
        await self._ensure_open()
        try:
            return await self._await_result(instance_id, timeout)
        finally:
            self._launch_waiters.pop(instance_id, None)

    async def _await_result(self, instance_id: str, timeout: float | None) -> Any:
        async with asyncio.timeout(timeout):
            delay = 0.005
            while True:
                run = self._runs.get(instance_id)
                if run is not None and run.task is not None:
                    outcome = await asyncio.shield(run.task)
                    if outcome.status == "completed":
                        return outcome.value
                    if outcome.error is not None and outcome.status != "stopped":
                        raise outcome.error
                    if self._runs.get(instance_id) is not run:
                        continue  # a new run took over (woken, recurred)
                    # suspended or stopped: awaiting the finished task again would never
                    # yield to the loop (its done-callback has not removed it yet)
                record = self.store.get_instance(instance_id)
                if record is None:
                    raise WorkflowNotFound(f"no instance {instance_id!r}", instance_id=instance_id)
                if record.status in FINAL_STATUSES:
                    return self._final_result(record)
                # Woken at once when the instance is launched here (resumed after a wait);
                # the growing delay is for instances that run in another process.
                waiter = self._launch_waiters.setdefault(instance_id, asyncio.Event())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wait(), delay)
                delay = min(delay * 2, 0.25)

    def _final_result(self, record: InstanceRecord) -> Any:
        if record.status == "completed":
            wf = self.registry.find_workflow(record.workflow_name)
            if wf is None:
                return InstanceInfo.from_record(record).output
            return wf.shape.decode_result(record.output)
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
        self._ensure_schema()
        return await replayer.replay(self, instance_id)

    # cancelling

    async def cancel(self, instance_id: str, reason: str = "cancelled") -> str:
        """Cancel an instance: its compensations run in reverse order; returns the status.

        If another live worker runs the instance, the request is stored and that worker
        cancels it at its next sweep; the status returned is then the current one.
        """
        await self._ensure_open()
        record = self._record(instance_id)
        if record.status in FINAL_STATUSES:
            raise InvalidWorkflowState(
                f"instance {instance_id!r} is already {record.status}; nothing to cancel",
                instance_id=instance_id,
                status=record.status,
            )
        self.store.request_cancel(instance_id, reason)
        run = self._runs.get(instance_id)
        if run is None and self._claim_if_free(record):
            wf = self.registry.find_workflow(record.workflow_name)
            if wf is None:
                self.store.release_instance(instance_id, self.worker_id)
                raise WorkflowNotFound(
                    f"cannot cancel {instance_id!r} here: its workflow "
                    f"{record.workflow_name!r} is not defined in this process",
                    instance_id=instance_id,
                )
            run = self._resumed_run(wf, self._record(instance_id))
            self._launch(run)
        elif run is not None:
            run.cancel(reason)
        if run is not None and run.task is not None:
            await asyncio.gather(asyncio.shield(run.task), return_exceptions=True)
        return self._record(instance_id).status

    def _claim_if_free(self, record: InstanceRecord) -> bool:
        owner = record.lock_owner
        if owner is not None:
            now = time.time()
            holders = {w.worker_id: w for w in self.store.list_workers()}
            holder = holders.get(owner)
            if holder is not None and leases.is_alive(holder, now, self.lease_seconds):
                return False
        return self.store.claim_instance(record.instance_id, self.worker_id, owner)

    # recovery and sweeps

    def _resumed_run(self, wf: Workflow[Any, Any], record: InstanceRecord) -> WorkflowRun:
        return WorkflowRun(
            self,
            wf,
            record.instance_id,
            input_json=record.input,
            history=self.store.load_history(record.instance_id),
            attempts=self.store.load_attempts(record.instance_id),
            status=record.status,
            stored_error=record.error,
            cancel_reason=record.cancel_reason,
        )

    def _recover(self) -> int:
        """Resume every active instance whose holder is gone and whose workflow we know."""
        now = time.time()
        live = [self.worker_id]
        for worker in self.store.list_workers():
            if worker.worker_id == self.worker_id:
                continue
            if leases.is_alive(worker, now, self.lease_seconds):
                live.append(worker.worker_id)
            else:
                self.store.remove_worker(worker.worker_id)
        resumed = 0
        for record in self.store.find_orphans(live):
            iid = record.instance_id
            wf = self.registry.find_workflow(record.workflow_name)
            if iid in self._runs or wf is None:
                continue
            if self._diverged.get(iid) == self.registry.generation:
                continue  # still the code that diverged; wait for a redefinition
            if not self.store.claim_instance(iid, self.worker_id, record.lock_owner):
                continue
            self._launch(self._resumed_run(wf, record))
            resumed += 1
        if resumed:
            log.info("resumed %d instance(s)", resumed)
        return resumed

    def _honour_cancels(self) -> None:
        for instance_id, reason in self.store.cancel_requests(self.worker_id):
            run = self._runs.get(instance_id)
            if run is not None:
                run.cancel(reason)

    async def _sweep_forever(self) -> None:
        tick = max(0.05, min(self.sweep_interval, self.lease_seconds / 3))
        while True:
            await asyncio.sleep(tick)
            try:
                self.store.heartbeat(self.worker_id, time.time())
                self._honour_cancels()
                self._recover()
            except Exception:
                log.exception("background sweep failed; retrying at the next tick")

    # management

    def _record(self, instance_id: str) -> InstanceRecord:
        self._ensure_schema()
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
        self._ensure_schema()
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
        self._ensure_schema()
        records = self.store.list_instances(
            InstanceQuery(workflow, status, None, dict(input_equals), None, limit)
        )
        return [InstanceInfo.from_record(r) for r in records]
