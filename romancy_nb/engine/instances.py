"""The instances this process runs: launching, finishing, resuming and recovering them.

:class:`Instances` is the :class:`~romancy_nb.engine.runtime.RunHost` of every
``WorkflowRun`` here. It keeps one promise above all: **no instance is leased to this
worker without a task running it.** A run never raises out of its task (an infrastructure
fault ends it ``paused``); an instance whose lease this worker holds but that has no run —
the lease could not be released, a wake-up committed and then the store failed — is found
by :meth:`Instances.recover` like any other orphan and resumed, after a backoff when the
store was failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from romancy_nb.engine import leases, logs
from romancy_nb.engine.outcome import Outcome
from romancy_nb.engine.runner import WorkflowRun
from romancy_nb.engine.signals import StoreFault

if TYPE_CHECKING:
    from romancy_nb.engine.commits import GroupCommitter
    from romancy_nb.engine.definitions import Workflow
    from romancy_nb.engine.gate import StoreGate
    from romancy_nb.engine.hooks import HookSet
    from romancy_nb.engine.outbox import OutboxRelay
    from romancy_nb.engine.registry import Registry
    from romancy_nb.engine.retry import RetryPolicy
    from romancy_nb.engine.wakeups import Waker
    from romancy_nb.store import InstanceRecord, StepRecord, Store
    from romancy_nb.store.protocol import WaitSpec, WokenRun

log = logging.getLogger("romancy_nb")

Listener = Callable[[str, "StepRecord | None"], None]

_PAUSE_FIRST = 0.05
_PAUSE_MAX = 30.0
_CLAIM_BATCH = 256
"""Instances claimed per look by a worker without ``max_concurrent``."""


class Listeners:
    """The callbacks of ``App.add_listener``; a failing one is logged and ignored."""

    def __init__(self) -> None:
        self._callbacks: list[Listener] = []

    def add(self, callback: Listener) -> None:
        self._callbacks.append(callback)

    def remove(self, callback: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._callbacks.remove(callback)

    def notify(self, instance_id: str, step: StepRecord | None = None) -> None:
        if not self._callbacks:  # every step calls this: nothing to do without views
            return
        for callback in list(self._callbacks):
            try:
                callback(instance_id, step)
            except Exception:
                log.exception("listener %r failed; ignored", callback)


class _Claim:
    """The context manager of :meth:`Instances.claiming` (a class: it is on every start)."""

    __slots__ = ("_claiming", "_instance_id", "_runs", "_taken")

    def __init__(self, runs: dict[str, WorkflowRun], claiming: set[str], instance_id: str) -> None:
        self._runs = runs
        self._claiming = claiming
        self._instance_id = instance_id
        self._taken = False

    def __enter__(self) -> bool:
        iid = self._instance_id
        if iid in self._runs or iid in self._claiming:
            return False
        self._claiming.add(iid)
        self._taken = True
        return True

    def __exit__(self, *exc_info: object) -> None:
        if self._taken:
            self._claiming.discard(self._instance_id)


class Instances:
    """Runs of this process, by instance id; the host every run reports to."""

    def __init__(
        self,
        *,
        store: Store,
        gate: StoreGate,
        registry: Registry,
        worker_id: str,
        default_retry: RetryPolicy | None,
        executor: Executor | None,
        committer: GroupCommitter | None,
        on_divergence: str,
        lease_seconds: float,
        listeners: Listeners,
        loop: asyncio.AbstractEventLoop,
        max_concurrent: int | None = None,
        hooks: HookSet | None = None,
    ) -> None:
        self._store = store
        self._hooks = hooks
        self._gate = gate
        self._registry = registry
        self._worker_id = worker_id
        self._default_retry = default_retry
        self._executor = executor
        self._committer = committer
        self._on_divergence = on_divergence
        self._lease_seconds = lease_seconds
        self._listeners = listeners
        self._loop = loop
        self.waker: Waker | None = None
        self.relay: OutboxRelay | None = None
        """The outbox relayer of this app, if it has somewhere to send events."""
        self._runs: dict[str, WorkflowRun] = {}
        self._claiming: set[str] = set()
        self._launch_waiters: dict[str, asyncio.Event] = {}
        self._diverged: dict[str, tuple[int, BaseException | None]] = {}
        """Instances whose run diverged: the registry generation it diverged under, and the
        error (recovery leaves them alone until the code is redefined)."""
        self._paused: dict[str, tuple[float, int]] = {}
        self._max_concurrent = max_concurrent
        self._reserved = 0
        self._claims: asyncio.Task[None] | None = None
        self._claims_wanted = False
        self._claims_again = False
        self._closed = False

    # RunHost

    @property
    def store(self) -> Store:
        return self._store

    @property
    def gate(self) -> StoreGate:
        return self._gate

    @property
    def registry(self) -> Registry:
        return self._registry

    @property
    def worker_id(self) -> str:
        return self._worker_id

    @property
    def default_retry(self) -> RetryPolicy | None:
        return self._default_retry

    @property
    def executor(self) -> Executor | None:
        return self._executor

    @property
    def committer(self) -> GroupCommitter | None:
        return self._committer

    @property
    def on_divergence(self) -> str:
        return self._on_divergence

    @property
    def hooks(self) -> HookSet | None:
        return self._hooks

    def notify(self, instance_id: str, step: StepRecord | None = None) -> None:
        self._listeners.notify(instance_id, step)

    def waits_registered(self, waits: list[WaitSpec]) -> None:
        if self.waker is not None:
            self.waker.waits_registered(waits)

    def message_published(self, channel: str) -> None:
        if self.waker is not None:
            self.waker.message_published(channel)

    def outbox_written(self) -> None:
        if self.relay is not None:
            self.relay.wake()

    async def relaunch(
        self, instance_id: str, input_json: str, values: tuple[Any, ...] | None, *, fresh: bool
    ) -> None:
        current = self._runs.get(instance_id)
        if current is None:
            return
        if fresh:  # a recur: a new run with no history
            run = WorkflowRun(
                self, current.workflow, instance_id, input_json=input_json, args=values
            )
        else:
            run = await self._loaded_run(current.workflow, instance_id, input_json)
        self.launch(run)

    # launching and finishing

    def get(self, instance_id: str) -> WorkflowRun | None:
        return self._runs.get(instance_id)

    def running(self) -> list[str]:
        return list(self._runs)

    def tasks(self) -> list[asyncio.Task[Outcome]]:
        """The tasks of the runs here that have not ended."""
        return [r.task for r in self._runs.values() if r.task is not None and not r.task.done()]

    def launch(self, run: WorkflowRun, *, detached: bool = False) -> None:
        """Run it here. ``detached``: in a context of its own, not the caller's — a run
        recovery picked up was not caused by whatever code is current (its trace span)."""
        context = contextvars.Context() if detached else None
        run.task = self._loop.create_task(
            run.run(), name=f"romancy:{run.instance_id}", context=context
        )
        self._runs[run.instance_id] = run
        run.task.add_done_callback(functools.partial(self._finished, run))
        waiter = self._launch_waiters.pop(run.instance_id, None)
        if waiter is not None:
            waiter.set()
        self.notify(run.instance_id)

    def _finished(self, run: WorkflowRun, task: asyncio.Task[Outcome]) -> None:
        iid = run.instance_id
        if self._runs.get(iid) is run:
            del self._runs[iid]
        self.notify(iid)
        if task.cancelled():
            return
        error = task.exception()
        outcome = Outcome("paused", error=error) if error is not None else task.result()
        if error is not None:
            log.error(
                "%s: the run raised %r; it is resumed later", iid, error,
                extra=logs.fields(iid, run.workflow.name),
            )  # fmt: skip
        if outcome.status == "diverged":
            self._diverged[iid] = (self._registry.generation, outcome.error)
        if outcome.status == "paused":
            _, faults = self._paused.get(iid, (0.0, 0))
            delay = min(_PAUSE_FIRST * 2**faults, _PAUSE_MAX)
            self._paused[iid] = (time.time() + delay, faults + 1)
        elif outcome.status in ("completed", "failed", "cancelled", "suspended"):
            self._paused.pop(iid, None)
        if self._max_concurrent is not None:
            self.want_claims()  # a slot is free: take queued work
            if self.waker is not None:
                self.waker.room_freed()  # and wake what waited for room

    async def stop(self, instance_id: str) -> bool:
        """Stop this process's run of the instance, if it has one, as closing the app does:
        its lease is released and nothing is recorded for the step in flight (it runs
        again when the instance resumes). False if there was no run to stop."""
        run = self._runs.get(instance_id)
        if run is None or run.task is None:
            return False
        run.task.cancel()
        await asyncio.gather(run.task, return_exceptions=True)
        return True

    def divergence(self, instance_id: str) -> BaseException | None:
        """The error of the instance's last run here if it diverged under the code defined
        now (it waits for a fix), else None."""
        generation, error = self._diverged.get(instance_id, (-1, None))
        return error if generation == self._registry.generation else None

    def forget_divergence(self, instance_id: str) -> None:
        """The instance's history was changed by hand: let recovery resume it again."""
        self._diverged.pop(instance_id, None)

    def launch_waiter(self, instance_id: str) -> asyncio.Event:
        """An event set when a run of ``instance_id`` is launched here."""
        return self._launch_waiters.setdefault(instance_id, asyncio.Event())

    def drop_waiter(self, instance_id: str) -> None:
        self._launch_waiters.pop(instance_id, None)

    @contextlib.asynccontextmanager
    async def taking_over(self, instance_id: str) -> AsyncIterator[bool]:
        """Reserve ``instance_id`` as :meth:`claiming` does, stopping this process's run of it
        first (time travel changes the history under it).

        The reservation is taken *before* the run stops: its release would otherwise let
        recovery here claim and relaunch the instance in the moment between the stop and
        the claim. ``False`` if another claim of it is under way here.
        """
        if instance_id in self._claiming:
            yield False
            return
        self._claiming.add(instance_id)
        try:
            await self.stop(instance_id)
            yield True
        finally:
            self._claiming.discard(instance_id)

    def claiming(self, instance_id: str) -> _Claim:
        """Reserve ``instance_id`` while this worker takes its lease and launches it.

        ``with instances.claiming(iid) as free:`` — ``free`` is False if it already runs
        here or another claim is under way, so that recovery (which also picks up instances
        leased to this worker) never launches a second run of an instance being woken,
        started or cancelled.
        """
        return _Claim(self._runs, self._claiming, instance_id)

    async def resumed_run(self, wf: Workflow[Any, Any], record: InstanceRecord) -> WorkflowRun:
        return await self._loaded_run(
            wf,
            record.instance_id,
            record.input,
            status=record.status,
            stored_error=record.error,
            cancel_reason=record.cancel_reason,
        )

    def woken_run(self, wf: Workflow[Any, Any], woken: WokenRun) -> WorkflowRun:
        """A run of an instance ``Store.wake`` just woke, from what the wake read back."""
        record = woken.record
        return WorkflowRun(
            self,
            wf,
            record.instance_id,
            input_json=record.input,
            history=woken.history,
            attempts=woken.attempts,
            status=record.status,
            stored_error=record.error,
            cancel_reason=record.cancel_reason,
        )

    async def _loaded_run(
        self, wf: Workflow[Any, Any], instance_id: str, input_json: str, **state: Any
    ) -> WorkflowRun:
        """A run of the instance with its history and attempts read in (one bulk read each)."""
        return WorkflowRun(
            self,
            wf,
            instance_id,
            input_json=input_json,
            history=await self._gate.call(self._store.load_history, instance_id),
            attempts=await self._gate.call(self._store.load_attempts, instance_id),
            **state,
        )

    async def claim_if_free(self, record: InstanceRecord) -> bool:
        """Take the instance's lease unless a live worker holds it."""
        owner = record.lock_owner
        if owner is not None and owner != self._worker_id:
            now = time.time()
            holders = {w.worker_id: w for w in await self._gate.call(self._store.list_workers)}
            holder = holders.get(owner)
            if holder is not None and leases.is_alive(holder, now, self._lease_seconds):
                return False
        return await self._gate.call(
            self._store.claim_instance, record.instance_id, self._worker_id, owner
        )

    # capacity, claims and recovery

    @property
    def max_concurrent(self) -> int | None:
        return self._max_concurrent

    def capacity(self) -> int:
        """How many more runs this worker takes (``App(max_concurrent=...)``)."""
        if self._max_concurrent is None:
            return _CLAIM_BATCH
        taken = len(self._runs) + len(self._claiming) + self._reserved
        return max(0, self._max_concurrent - taken)

    def drain(self) -> None:
        """Take no more work (a graceful shutdown): no claims, starts go to other workers."""
        self._max_concurrent = 0

    def want_claims(self) -> None:
        """Look for runnable instances soon (one started for any worker, one released, a
        holder gone, capacity freed here); requests made meanwhile share one look."""
        if self._claims_wanted or self._closed:
            return
        self._claims_wanted = True
        self._loop.call_soon(self._spawn_claims)

    def _spawn_claims(self) -> None:
        self._claims_wanted = False
        if self._closed or self._claims is not None:
            self._claims_again = self._claims is not None
            return
        self._claims = self._loop.create_task(self._claim_loop(), name="romancy-claims")

    async def _claim_loop(self) -> None:
        try:
            while True:
                self._claims_again = False
                try:
                    await self.recover()
                except (Exception, StoreFault) as error:
                    log.warning("claiming runnable instances failed (%s); retried later", error)
                    return
                if not self._claims_again:
                    return
        finally:
            self._claims = None

    async def recover(self) -> int:
        """Take and run what is runnable here, up to this worker's capacity: instances
        started for any worker, released ones, and those whose holder is gone — this
        worker included, when it holds a lease with no run."""
        names = [wf.name for wf in self._registry.workflows()]
        if not names or self.capacity() < 1:
            return 0
        now = time.time()
        # its own leases without a run count too (what runs here is excluded)
        dead = [self._worker_id, *await self._gone_workers(now)]
        # the room as it is now, reserved at once: a start or a wake-up may have taken
        # some while the workers were read
        capacity = self.capacity()
        if capacity < 1:
            return 0
        generation = self._registry.generation
        exclude = {*self._runs, *self._claiming}
        exclude.update(iid for iid, (gen, _) in self._diverged.items() if gen == generation)
        exclude.update(iid for iid, (until, _) in self._paused.items() if until > now)
        # Held until the claimed runs are launched (a network store answers later): a start
        # or a wake-up meanwhile must not take the same room.
        self._reserved += capacity
        resumed = 0
        try:
            claimed = await self._gate.call(
                self._store.claim_runnable, self._worker_id, dead, names, sorted(exclude), capacity
            )
            for record in claimed:
                resumed += await self._run_claimed(record)
        finally:
            self._reserved -= capacity
            if self.waker is not None:  # a wake-up may have found no room meanwhile
                self.waker.room_freed()
        if resumed:
            log.info("resumed %d instance(s)", resumed)
        return resumed

    async def _run_claimed(self, record: InstanceRecord) -> bool:
        iid = record.instance_id
        with self.claiming(iid) as free:
            if not free:  # it runs here already (it was never anyone else's)
                return False
            wf = self._registry.find_workflow(record.workflow_name)
            if wf is None:  # redefined away meanwhile: leave it to others
                await self._gate.call(self._store.release_instance, iid, self._worker_id)
                return False
            self.launch(await self.resumed_run(wf, record), detached=True)
        return True

    async def _gone_workers(self, now: float) -> list[str]:
        """The other registered workers that are no longer alive."""
        return [
            worker.worker_id
            for worker in await self._gate.call(self._store.list_workers)
            if worker.worker_id != self._worker_id
            and not leases.is_alive(worker, now, self._lease_seconds)
        ]

    async def forget_dead_workers(self) -> int:
        """The leader's sweep: drop the rows of workers that are gone (their instances are
        claimable already); how many."""
        gone = await self._gone_workers(time.time())
        for worker_id in gone:
            await self._gate.call(self._store.remove_worker, worker_id)
        return len(gone)

    async def honour_cancels(self) -> None:
        for instance_id, reason in await self._gate.call(
            self._store.cancel_requests, self._worker_id
        ):
            run = self._runs.get(instance_id)
            if run is not None:
                run.cancel(reason)

    async def close(self) -> None:
        """Stop every run (they resume at the next start); their leases are released."""
        self._closed = True
        if self._claims is not None:
            self._claims.cancel()
            await asyncio.gather(self._claims, return_exceptions=True)
        tasks = [run.task for run in self._runs.values() if run.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._runs.clear()


__all__ = ["Instances", "Listeners"]
