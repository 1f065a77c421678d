"""Time travel: rewind, roll back, retry and fork an instance, then let it run on.

Every operation takes the instance's lease first (refused while another live worker holds
it; this process's own run is stopped), decides which steps stay (:mod:`cuts`), and applies
that in one store transaction: a crash leaves the old state or the new one. History that
goes is archived, never deleted. Afterwards the instance is running again and resumes with
the current code from the steps kept — here when its workflow is defined here, else in any
worker that has it.

``rollback`` is durable across a crash: one transaction marks the instance
``rolling_back`` (with the step it returns to); its run then compensates the later steps in
reverse order, each a recorded step, archives them and goes on forwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, ParamSpec, TypeVar

from romancy_nb.engine import cuts, ids, saga
from romancy_nb.engine.cuts import HistoryChange
from romancy_nb.engine.runner import WorkflowRun
from romancy_nb.engine.signals import StoreFault
from romancy_nb.errors import InvalidWorkflowState, WorkflowNotFound
from romancy_nb.store.protocol import HistoryCut, InstanceRecord, StepRecord

if TYPE_CHECKING:
    from romancy_nb.engine.definitions import Workflow
    from romancy_nb.engine.instances import Instances

P = ParamSpec("P")
T = TypeVar("T")


class Undo(NamedTuple):
    """One compensation a rollback would run: the step, its activity and its compensation's
    function name (None: the activity is not defined in this process, so the undo would
    fail)."""

    step_id: str
    activity: str
    compensation: str | None


def _store_errors_as_they_are(operation: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """A management call has no run to pause: a store fault reaches its caller as the
    :class:`~romancy_nb.errors.StoreError` it is, not as the internal StoreFault."""

    @functools.wraps(operation)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await operation(*args, **kwargs)
        except StoreFault as fault:
            raise fault.error from None

    return guarded


class TimeTravel:
    """The time-travel operations of an :class:`~romancy_nb.engine.app.App`."""

    def __init__(self, instances: Instances) -> None:
        self._instances = instances
        self._store = instances.store
        self._gate = instances.gate

    # reading

    async def _record(self, instance_id: str) -> InstanceRecord:
        record = await self._gate.call(self._store.get_instance, instance_id)
        if record is None:
            raise WorkflowNotFound(f"no instance {instance_id!r}", instance_id=instance_id)
        return record

    async def _history(self, instance_id: str) -> list[StepRecord]:
        return await self._gate.call(self._store.load_history, instance_id)

    @_store_errors_as_they_are
    async def rollback_plan(self, instance_id: str, to: str | None) -> list[Undo]:
        """The compensations ``rollback(instance_id, to)`` would run, in the order it would
        run them (what the panel lists before asking to confirm). Writes nothing."""
        iid = ids.validate_instance_id(instance_id)
        await self._record(iid)
        history = await self._history(iid)
        through = cuts.target(history, to, iid)
        later = [s for s in history if s.seq > through.seq]
        return [
            Undo(
                step.step_id,
                step.name,
                activity.compensator.fn.__name__ if activity and activity.compensator else None,
            )
            for step, activity in saga.pending(later, self._instances.registry)
        ]

    # changing history

    @_store_errors_as_they_are
    async def rewind(self, instance_id: str, to: str | None) -> HistoryChange:
        """Archive the history after ``to`` and resume from there; no compensation."""

        def decide(record: InstanceRecord, history: list[StepRecord]) -> HistoryCut:
            return cuts.cut(history, cuts.target(history, to, record.instance_id), "rewound")

        return await self._change(instance_id, "rewind", decide)

    @_store_errors_as_they_are
    async def retry(self, instance_id: str) -> HistoryChange:
        """Resume a failed instance from the step that failed, keeping earlier results."""

        def decide(record: InstanceRecord, history: list[StepRecord]) -> HistoryCut:
            if record.status != "failed":
                raise InvalidWorkflowState(
                    f"instance {record.instance_id!r} is {record.status}, not failed; "
                    "only a failed instance can be retried (rewind it instead)",
                    instance_id=record.instance_id,
                    status=record.status,
                )
            return cuts.cut(history, cuts.failed_tail(history), "retried")

        return await self._change(instance_id, "retry", decide)

    @_store_errors_as_they_are
    async def rollback(self, instance_id: str, to: str | None) -> HistoryChange:
        """Compensate the completed steps after ``to`` (newest first), archive them and
        resume from ``to``; returns once the compensations ran and history is cut."""

        def decide(record: InstanceRecord, history: list[StepRecord]) -> HistoryCut:
            through = cuts.target(history, to, record.instance_id)
            seq = max((s.seq for s in history), default=0) + 1
            mark = cuts.marker(record.instance_id, through, seq, time.time())
            return HistoryCut((), "rolled_back", through.step_id, "rolling_back", marker=mark)

        done = asyncio.Event()

        def watch(run: WorkflowRun) -> None:
            run.rolled_back = done

        change = await self._change(instance_id, "rollback", decide, watch, needs_code=True)
        run = self._instances.get(change.instance_id)
        if run is not None and run.task is not None:
            waiter = asyncio.ensure_future(done.wait())
            try:
                await asyncio.wait([waiter, run.task], return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            if run.rollback_change is not None:  # the run's own account of its cut
                return run.rollback_change
        return await self._rolled_back(change.instance_id)

    async def _rolled_back(self, iid: str) -> HistoryChange:
        """Read back what a rollback did: the archived run it made (or, if it ended failed,
        the compensations in the instance's history)."""
        record = await self._record(iid)
        runs = await self._gate.call(self._store.archived_runs, iid)  # a run elsewhere did it
        history = await self._history(iid)
        newest = runs[-1] if runs else None
        if record.status != "failed" and newest is not None and newest.status == "rolled_back":
            steps = await self._gate.call(self._store.load_archived_history, iid, newest.run_no)
            run_no = newest.run_no
        else:
            steps, run_no = history, 0
        compensated = [
            s.step_id.removeprefix("compensate:")
            for s in steps
            if s.kind == "compensation" and s.status == "completed"
        ]
        forward = [s.step_id for s in steps if s.kind not in cuts.UNWINDING_KINDS]
        current = [s for s in history if s.kind not in cuts.UNWINDING_KINDS]
        if run_no and newest is not None:  # only what was there up to the cut, not re-runs
            through = next((s.seq for s in current if s.step_id == newest.cut_after), 0)
            current = [s for s in current if s.seq <= through]
        kept = [s.step_id for s in current]
        return HistoryChange(
            iid, "rollback", kept, forward if run_no else [], run_no, compensated, record.status
        )

    async def _change(
        self,
        instance_id: str,
        operation: str,
        decide: Callable[[InstanceRecord, list[StepRecord]], HistoryCut],
        prepare: Callable[[WorkflowRun], None] | None = None,
        *,
        needs_code: bool = False,
    ) -> HistoryChange:
        instances, gate, store = self._instances, self._gate, self._store
        owner = instances.worker_id
        iid = ids.validate_instance_id(instance_id)
        record = await self._record(iid)
        _refuse_unwinding(record, operation)
        wf = instances.registry.find_workflow(record.workflow_name)
        if wf is None and needs_code:
            raise WorkflowNotFound(
                f"cannot {operation} {iid!r} here: its workflow {record.workflow_name!r} is not "
                "defined in this process (its compensations would not be known)",
                instance_id=iid,
            )
        async with instances.taking_over(iid) as free:
            if not free:
                raise InvalidWorkflowState(
                    f"cannot {operation} {iid!r}: this process is starting, waking or "
                    "cancelling it right now; try again in a moment",
                    instance_id=iid,
                    worker=owner,
                )
            record = await self._record(iid)  # stopping a run here released its lease
            _refuse_unwinding(record, operation)
            if not await instances.claim_if_free(record):
                # Recovery here may have taken the released lease meanwhile; this
                # reservation keeps it from launching a run, so the lease is ours to use.
                holder = (await self._record(iid)).lock_owner  # who won, not who held it
                if holder != owner:
                    raise InvalidWorkflowState(
                        f"cannot {operation} {iid!r}: it is running in another worker "
                        f"({holder}); wait until it waits or ends, or cancel it",
                        instance_id=iid,
                        worker=holder,
                    )
            try:
                history = await self._history(iid)
                cut = decide(record, history)
                run_no = await gate.call(store.cut_history, iid, owner, cut, time.time())
            except BaseException:
                with contextlib.suppress(Exception):
                    await gate.call(store.release_instance, iid, owner)
                raise
            instances.forget_divergence(iid)
            await self._resume(wf, iid, prepare)
        archived = set(cut.archive)
        return HistoryChange(
            iid,
            operation,
            [s.step_id for s in history if s.seq not in archived],
            [s.step_id for s in history if s.seq in archived],
            run_no,
            status=cut.status,
        )

    async def _resume(
        self,
        wf: Workflow[Any, Any] | None,
        iid: str,
        prepare: Callable[[WorkflowRun], None] | None,
    ) -> None:
        """Launch the changed instance here, or leave it to a worker that has its code."""
        instances = self._instances
        if wf is None:
            await self._gate.call(self._store.release_instance, iid, instances.worker_id)
            return
        run = await instances.resumed_run(wf, await self._record(iid))
        if prepare is not None:
            prepare(run)
        instances.launch(run)

    # forking

    @_store_errors_as_they_are
    async def fork(
        self,
        instance_id: str,
        at: str | None,
        input: Mapping[str, Any] | None,
        new_id: str | None,
    ) -> str:
        """A new instance whose history is the original's up to ``at`` (all of it when
        None), optionally with a new input; the original is only read."""
        instances = self._instances
        iid = ids.validate_instance_id(instance_id)
        record = await self._record(iid)
        history = await self._history(iid)
        forward = [s for s in history if s.kind not in cuts.UNWINDING_KINDS]
        if at is None:  # everything that moves the workflow forwards
            last = max(forward, key=lambda s: s.seq, default=None)
            end = max((s.seq for s in history), default=0)
            through = cuts.Target(last.step_id if last else None, end)
        else:
            through = cuts.target(history, at, iid)
        wf = instances.registry.find_workflow(record.workflow_name)
        input_json = record.input if input is None else _new_input(wf, record, input)
        fork_id = ids.validate_instance_id(new_id) if new_id is not None else _fork_id(iid)
        copied = [s._replace(instance_id=fork_id) for s in cuts.kept(history, through)]
        subscriptions, groups = cuts.membership(copied)
        now = time.time()
        fork = InstanceRecord(
            fork_id, record.workflow_name, "running", input_json, None, None,
            instances.worker_id if wf is not None else None, None,
            wf.code_version if wf is not None else record.code_version, now, now,
            iid, through.step_id,
        )  # fmt: skip
        with instances.claiming(fork_id) as free:
            created = free and await self._gate.call(
                self._store.fork_instance, fork, copied, sorted(subscriptions.items()),
                sorted(groups),
            )  # fmt: skip
            if not created:
                raise InvalidWorkflowState(
                    f"cannot fork {iid!r} as {fork_id!r}: an instance with that id exists",
                    instance_id=fork_id,
                )
            if wf is not None:
                instances.launch(
                    WorkflowRun(instances, wf, fork_id, input_json=input_json, history=copied)
                )
        return fork_id


def _refuse_unwinding(record: InstanceRecord, operation: str) -> None:
    if record.status in ("compensating", "rolling_back"):
        doing = {"compensating": "undoing a failure or cancel"}.get(record.status, "rolling back")
        raise InvalidWorkflowState(
            f"cannot {operation} {record.instance_id!r} while it is {doing} "
            f"({record.status}); wait until that ends",
            instance_id=record.instance_id,
            status=record.status,
        )


def _new_input(
    wf: Workflow[Any, Any] | None, record: InstanceRecord, values: Mapping[str, Any]
) -> str:
    """The fork's input: ``values`` are the workflow's arguments by name, checked against
    its signature like a start's."""
    if wf is None:
        raise WorkflowNotFound(
            f"cannot fork {record.instance_id!r} with a new input here: its workflow "
            f"{record.workflow_name!r} is not defined in this process",
            instance_id=record.instance_id,
        )
    if not isinstance(values, Mapping):
        kind = type(values).__name__
        raise TypeError(f"input must map the workflow's parameter names to values, not {kind}")
    shape = wf.shape
    names = [parameter.name for parameter in shape.params]
    old = dict(zip(names, shape.decode_input(record.input), strict=True))
    merged = {**old, **values}
    return shape.encode_input(shape.validate_input(shape.bind((), merged)))


def _fork_id(instance_id: str) -> str:
    return f"{instance_id}-fork-{uuid.uuid4().hex[:8]}"


__all__ = ["HistoryChange", "TimeTravel", "Undo"]
