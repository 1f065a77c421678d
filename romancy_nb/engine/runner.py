"""Running one workflow instance: replay what history holds, execute what it does not.

A run loads the instance's history in one bulk read, then calls the workflow function from
the top. Each activity call takes the next step id; a recorded step returns its stored
result at once (after the determinism check), a new one executes with retries and is
recorded — in the activity's own transaction when it used ``ctx.session``.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import random
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from romancy_nb.engine import channels, codec, cuts, events, groups, replay, retry, saga, timers
from romancy_nb.engine.context import ActivityContext, WorkflowContext
from romancy_nb.engine.failures import (
    attempt_error,
    attempt_from_json,
    error_from_json,
    error_to_json,
)
from romancy_nb.engine.hooks import ActivityCall, RunInfo
from romancy_nb.engine.logs import fields as log_fields
from romancy_nb.engine.outcome import Outcome
from romancy_nb.engine.sessions import AttemptSession
from romancy_nb.engine.signals import (
    CancelSignal,
    EngineSignal,
    LeaseLostSignal,
    RecurSignal,
    ReplayFrontier,
    StoreFault,
    SuspendSignal,
)
from romancy_nb.engine.waiting import Suspension
from romancy_nb.errors import (
    ActivityTimeoutError,
    DeterminismViolation,
    LockLostError,
    RetryExhaustedError,
    RomancyError,
    SerializationError,
    StoreError,
    TerminalError,
    WorkflowCancelled,
)
from romancy_nb.store import AttemptRecord, StepRecord

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from romancy_nb.engine.channels import ChannelMessage
    from romancy_nb.engine.definitions import Activity, Workflow
    from romancy_nb.engine.events import ReceivedEvent
    from romancy_nb.engine.runtime import RunHost
    from romancy_nb.engine.shapes import CallShape
    from romancy_nb.store import Store
    from romancy_nb.store.protocol import OutboxEvent, WaitSpec

T = TypeVar("T")

log = logging.getLogger("romancy_nb")

_DETERMINISTIC_TYPES: dict[str, Any] = {"now": datetime, "uuid": uuid.UUID, "random": float}
_DETERMINISTIC_MAKERS: dict[str, Any] = {
    "now": lambda: datetime.now(UTC),
    "uuid": uuid.uuid4,
    "random": random.random,
}


class WorkflowRun:
    """One execution (first run or replay) of one instance in this process.

    It implements :class:`~romancy_nb.engine.runtime.WorkflowRuntime` (what the context
    calls) and :class:`~romancy_nb.engine.runtime.StepHost` (what the waiting primitives
    call); everything it needs from the process comes from its
    :class:`~romancy_nb.engine.runtime.RunHost`.
    """

    def __init__(
        self,
        host: RunHost,
        workflow: Workflow[Any, Any],
        instance_id: str,
        *,
        input_json: str,
        args: tuple[Any, ...] | None = None,
        history: list[StepRecord] | tuple[()] = (),
        attempts: list[AttemptRecord] | tuple[()] = (),
        status: str = "running",
        stored_error: str | None = None,
        cancel_reason: str | None = None,
    ) -> None:
        self.host = host
        self._store = host.store
        self._inline = host.store.inline
        self.workflow = workflow
        self._instance_id = instance_id
        self._owner = host.worker_id
        self.ctx = WorkflowContext(self)
        self.suspension = Suspension(host, instance_id, self._owner)
        self.suspension.cancel_reason = cancel_reason
        self.violation: DeterminismViolation | None = None
        self.task: asyncio.Task[Outcome] | None = None
        self.rolled_back: asyncio.Event | None = None
        """Set (by ``app.rollback``) to learn when a rollback's compensations and cut are done."""
        self.rollback_change: cuts.HistoryChange | None = None
        """What this run's rollback kept, archived and compensated, once it is done."""
        self._input_json = input_json
        self._args = args
        self._status = status
        self._stored_error = stored_error
        policy = workflow.on_divergence or host.on_divergence
        self._rewind_on_divergence = policy == "rewind"
        self._cut: list[StepRecord] = []
        """Recorded steps a divergence cut off (``on_divergence="rewind"``), still to archive."""
        self.journal: list[replay.Asked] | None = None
        """What the code asked for, step by step (``replay_only`` runs: the replay report)."""
        self._load(history, attempts)
        self.hook_run: RunInfo | None = None
        """What ``App(hooks=...)`` are told about this run (None without hooks)."""
        # A new start (or a recur), or one another worker took over before its first step.
        self._fresh = args is not None or (not history and not attempts and status == "running")
        self._ids = replay.StepIds()
        self._unflushed: list[StepRecord] = []
        self._started = False

    def _load(
        self,
        history: list[StepRecord] | tuple[()],
        attempts: list[AttemptRecord] | tuple[()],
    ) -> None:
        self._history = {step.step_id: step for step in history}
        """Recorded steps the code has not asked for yet, by step id."""
        self.to_replay = sum(1 for step in history if step.kind not in cuts.UNWINDING_KINDS)
        """How many of them move the workflow forwards (``is_replaying`` while above 0)."""
        self._seq = itertools.count(max((step.seq for step in history), default=0) + 1)
        self._attempts: dict[str, list[AttemptRecord]] = {}
        for record in attempts:
            self._attempts.setdefault(record.step_id, []).append(record)

    @property
    def replay_only(self) -> bool:
        """Set by the replayer: answer steps from history only, write and execute nothing,
        and keep a :attr:`journal` of every step the code asks for."""
        return self.suspension.replay_only

    @replay_only.setter
    def replay_only(self, value: bool) -> None:
        self.suspension.replay_only = value
        self.journal = [] if value else None

    @property
    def cancel_reason(self) -> str | None:
        return self.suspension.cancel_reason

    def cancel(self, reason: str) -> None:
        """Stop the workflow code where it awaits and unwind (compensate, then cancelled)."""
        if self.suspension.cancel_reason is not None:
            return
        self.suspension.cancel_reason = reason
        # A task cancelled before its first step never enters run(); run() checks the
        # reason on entry instead.
        if self._started and self.task is not None:
            self.task.cancel()

    # WorkflowRuntime: what the context asks

    @property
    def instance_id(self) -> str:
        return self._instance_id

    @property
    def workflow_name(self) -> str:
        return self.workflow.name

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def store(self) -> Store:
        return self._store

    @property
    def is_replaying(self) -> bool:
        return self.to_replay > 0

    def call_activity(
        self,
        activity: Activity[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        activity_id: str | None,
    ) -> Awaitable[Any]:
        step_id = self._ids.take(activity.name, activity_id, self._instance_id)
        shape = activity.shape
        values = shape.bind(args, kwargs)
        input_json = shape.encode_args(values)
        recorded = self.recorded(step_id, "activity", activity.name, input_json)
        if recorded is not None:
            return _replayed(recorded, shape)
        return self._execute(activity, step_id, values, input_json, "activity")

    def deterministic(self, kind: str) -> Any:
        """``ctx.now()`` / ``uuid()`` / ``random()``: made once, recorded, replayed after.

        The call is synchronous, so its step is written with the run's next store write
        (before any activity, wait or ending can make the value visible outside).
        """
        step_id = self._ids.take(kind, None, self._instance_id)
        tp = _DETERMINISTIC_TYPES[kind]
        recorded = self.recorded(step_id, kind, kind, None)
        if recorded is not None:
            return codec.decode(recorded.output, tp)
        if self.replay_only:
            raise ReplayFrontier(f"{step_id} is not recorded: it would make a new {kind}")
        value = _DETERMINISTIC_MAKERS[kind]()
        at = time.time()
        output = codec.encode(value, tp, kind)
        step = StepRecord(
            self._instance_id, self.next_seq(), step_id, kind, kind, "completed",
            None, output, None, 1, at, at,
        )  # fmt: skip
        self._unflushed.append(step)
        return value

    def sleep(self, seconds: float, timer_id: str | None) -> Awaitable[None]:
        return timers.sleep(self, seconds, timer_id)

    def sleep_until(self, when: datetime, timer_id: str | None) -> Awaitable[None]:
        return timers.sleep_until(self, when, timer_id)

    def wait_event(
        self, event_type: str, timeout: float | None, model: Any, wait_id: str | None
    ) -> Awaitable[ReceivedEvent]:
        return events.wait_event(self, event_type, timeout, model, wait_id)

    def subscribe(self, channel: str, mode: str) -> Awaitable[None]:
        return channels.subscribe(self, channel, mode)

    def unsubscribe(self, channel: str) -> Awaitable[None]:
        return channels.unsubscribe(self, channel)

    def receive(
        self, channel: str, timeout: float | None, model: Any, receive_id: str | None
    ) -> Awaitable[ChannelMessage]:
        return channels.receive(self, channel, timeout, model, receive_id)

    def publish(self, channel: str, data: Any, metadata: dict[str, Any] | None) -> Awaitable[str]:
        return channels.publish(self, channel, data, metadata)

    def send_to(
        self, instance_id: str, channel: str, data: Any, metadata: dict[str, Any] | None
    ) -> Awaitable[str]:
        return channels.send_to(self, instance_id, channel, data, metadata)

    def join_group(self, group: str) -> Awaitable[None]:
        return groups.join_group(self, group)

    def leave_group(self, group: str) -> Awaitable[None]:
        return groups.leave_group(self, group)

    def recur(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> NoReturn:
        shape = self.workflow.shape
        values = shape.validate_input(shape.bind(args, kwargs))
        raise RecurSignal(values, shape.encode_input(values))

    # StepHost: what the waiting primitives ask

    def take_step_id(self, name: str, explicit: str | None) -> str:
        return self._ids.take(name, explicit, self._instance_id)

    def recorded(
        self, step_id: str, kind: str, name: str, input_json: str | None
    ) -> StepRecord | None:
        recorded = self._history.pop(step_id, None)
        journal = self.journal
        if recorded is None:
            if journal is not None:
                journal.append(replay.Asked(step_id, kind, name, input_json))
            return None
        if recorded.kind != kind or recorded.name != name or recorded.input != input_json:
            violation = replay.violation(self._instance_id, recorded, kind, name, input_json)
            hooks = self.host.hooks
            if hooks is not None and self.hook_run is not None:
                hooks.emit("replay_diverged", self.hook_run, violation)
            if self._rewind_on_divergence and journal is None:
                self._cut_from(recorded, violation)
                return None
            if journal is not None:
                journal.append(replay.Asked(step_id, kind, name, input_json, recorded, violation))
            self.violation = violation
            raise violation
        self.to_replay -= 1
        if journal is not None:
            journal.append(replay.Asked(step_id, kind, name, input_json, recorded))
        return recorded

    def _cut_from(self, diverged: StepRecord, violation: DeterminismViolation) -> None:
        """``on_divergence="rewind"``: forget the diverging step and every recorded step
        after it that the code has not used yet; they are archived before the next write
        (:meth:`_flush`) and execute again. Steps the code already used stay."""
        later = [s for s in self._history.values() if s.seq > diverged.seq]
        for step in later:
            del self._history[step.step_id]
        gone = [diverged, *later]
        self.to_replay -= sum(1 for s in gone if s.kind not in cuts.UNWINDING_KINDS)
        self._cut.extend(gone)
        log.warning(
            "%s: the code diverged from history at %s; it and %d later step(s) are archived "
            "and run again (on_divergence='rewind')\n%s",
            self._instance_id,
            diverged.step_id,
            len(later),
            violation.diff,
            extra=self._log_fields(diverged.step_id),
        )

    def next_seq(self) -> int:
        return next(self._seq)

    def _log_fields(self, step_id: str | None = None) -> dict[str, str | None]:
        return log_fields(self._instance_id, self.workflow.name, step_id)

    def new_step(
        self, step_id: str, kind: str, status: str, input_json: str | None, output: str | None
    ) -> StepRecord:
        at = time.time()
        return StepRecord(
            self._instance_id, self.next_seq(), step_id, kind, kind, status,
            input_json, output, None, 1, at, at,
        )  # fmt: skip

    async def write(self, method: Callable[..., T], *args: Any) -> T:
        if self._unflushed or self._cut:
            await self._flush()
        return await self._call(method, *args)

    async def _call(self, method: Callable[..., T], *args: Any) -> T:
        try:
            return await self.host.gate.call(method, *args)
        except LockLostError:
            raise LeaseLostSignal(self._instance_id) from None

    async def record(self, step: StepRecord) -> None:
        if self._unflushed or self._cut:
            await self._flush()
        await self._write_step(step)

    async def fail(
        self, step_id: str, kind: str, input_json: str | None, error: Exception
    ) -> NoReturn:
        step = self.new_step(step_id, kind, "failed", input_json, None)
        await self.record(step._replace(error=error_to_json(error)))
        raise error

    def live_wait(self, status: str) -> None:
        self.suspension.live_wait(status)

    def suspend_on(self, wait: WaitSpec, status: str) -> NoReturn:
        self.suspension.suspend_on(wait, status)

    def message_published(self, channel: str) -> None:
        self.host.message_published(channel)

    # recording

    async def _flush(self) -> None:
        if self._cut:
            await self._archive_cut()
        steps, self._unflushed = self._unflushed, []
        for step in steps:
            await self._write_step(step)

    async def _archive_cut(self) -> None:
        """Archive the steps a divergence cut off, in one store transaction."""
        gone, self._cut = self._cut, []
        history = await self._call(self._store.load_history, self._instance_id)
        seqs = {s.seq for s in gone}
        first = min(seqs)
        before = [s for s in history if s.seq < first and s.seq not in seqs]
        through = max(before, key=lambda s: s.seq, default=None)
        target = cuts.Target(through.step_id if through else None, through.seq if through else 0)
        keep = [s for s in history if s.seq not in seqs]
        cut = cuts.cut(history, target, "diverged", keep=keep)
        await self._call(self._store.cut_history, self._instance_id, self._owner, cut, time.time())
        self._attempts.clear()
        self.host.notify(self._instance_id)

    async def _write_step(self, step: StepRecord, events: Sequence[OutboxEvent] = ()) -> None:
        committer = self.host.committer
        if events:  # the step and its outbox events in one transaction (never grouped)
            recorded = await self.host.gate.call(self._store.record_step, step, self._owner, events)
        elif committer is not None:
            recorded = await committer.record(step)
        elif self._inline:  # the hot path: one statement, no retry machinery unless it fails
            try:
                recorded = self._store.record_step(step, self._owner)
            except StoreError:
                recorded = await self.host.gate.call(self._store.record_step, step, self._owner)
        else:
            recorded = await self.host.gate.call(self._store.record_step, step, self._owner)
        if not recorded:
            raise LeaseLostSignal(self._instance_id)
        self.host.notify(self._instance_id, step)

    # executing steps

    async def _execute(
        self,
        activity: Activity[Any, Any],
        step_id: str,
        values: tuple[Any, ...],
        input_json: str,
        kind: str,
    ) -> Any:
        if self.replay_only:  # never run an activity body while only replaying
            raise ReplayFrontier(f"{step_id} is not recorded: it would run {activity.name}")
        if self._unflushed or self._cut:
            await self._flush()
        past = self._attempts.pop(step_id, [])
        errors = [attempt_from_json(r.attempt, r.error, r.at) for r in past]
        attempt = len(past)
        started = time.time()
        faults = 0
        hooks, call = self.host.hooks, None
        while True:
            attempt += 1
            if hooks is not None and self.hook_run is not None:
                call = ActivityCall(self.hook_run, step_id, activity.name, kind, attempt)
                hooks.emit("activity_started", call)
            session = AttemptSession(self.store, self.host.gate)
            actx = ActivityContext(
                activity, session, self._instance_id, self.workflow.name, step_id, attempt
            )
            try:
                result, recorded = await self._attempt(
                    activity, actx, session, values, input_json, kind, started
                )
            except StoreFault as fault:
                if not getattr(fault.error, "transient", False):
                    raise
                # The engine's own transaction failed (a lock, a full disk): the attempt's
                # writes rolled back, so run it again once the store is back — not counted.
                attempt -= 1
                faults += 1
                await self.host.gate.backoff(faults)
                committed = await self._committed_despite(step_id)
                if committed is not None:
                    log.warning(
                        "%s %s: %s; its commit had landed, the attempt is not run again",
                        self._instance_id, step_id, fault, extra=self._log_fields(step_id),
                    )  # fmt: skip
                    if hooks is not None and call is not None:
                        hooks.emit("activity_completed", call)
                    return await _replayed(committed, activity.shape)
                log.warning(
                    "%s %s: %s; the attempt runs again", self._instance_id, step_id, fault,
                    extra=self._log_fields(step_id),
                )  # fmt: skip
                if hooks is not None and call is not None:
                    hooks.emit("activity_retried", call, fault.error, 0.0)
                continue
            except SerializationError as error:
                final: BaseException = error
                break
            except Exception as error:
                now = time.time()
                errors.append(attempt_error(attempt, error, now))
                await self.write(
                    self.store.record_attempt,
                    AttemptRecord(self._instance_id, step_id, attempt, error_to_json(error), now),
                )
                policy = retry.resolve(activity.retry, self.host.default_retry)
                if policy.should_retry(error, attempt):
                    delay = policy.delay(attempt)
                    if hooks is not None and call is not None:
                        hooks.emit("activity_retried", call, error, delay)
                    log.info(
                        "%s %s attempt %d failed (%s); retrying in %.3g s",
                        self._instance_id,
                        step_id,
                        attempt,
                        error,
                        delay,
                        extra=self._log_fields(step_id),
                    )
                    await asyncio.sleep(delay)
                    continue
                if isinstance(error, TerminalError):
                    final = error
                else:
                    final = RetryExhaustedError(activity.name, step_id, errors)
                    final.__cause__ = error
                break
            if recorded is not None:
                if self._unflushed or self._cut:  # a ctx.now() made meanwhile goes first
                    await self._flush()
                await self._write_step(recorded, session.events)
            if session.events:
                self.host.outbox_written()
            if hooks is not None and call is not None:
                hooks.emit("activity_completed", call)
            return result
        step = StepRecord(
            self._instance_id, self.next_seq(), step_id, kind, activity.name, "failed",
            input_json, None, error_to_json(final), attempt, started, time.time(),
        )  # fmt: skip
        await self.record(step)
        if hooks is not None and call is not None:
            hooks.emit("activity_failed", call, final)
        raise final

    async def _committed_despite(self, step_id: str) -> StepRecord | None:
        """The step, if the attempt whose commit failed recorded it after all.

        A commit whose reply was lost with the connection (the server crashed right after
        it) may have landed: running the attempt again would do its transaction's work
        twice. The history tells, once the store answers again.
        """
        history = await self._call(self._store.load_history, self._instance_id)
        committed = next((s for s in history if s.step_id == step_id), None)
        if committed is not None:
            self.host.notify(self._instance_id, committed)
        return committed

    async def _attempt(
        self,
        activity: Activity[Any, Any],
        actx: ActivityContext,
        session: AttemptSession,
        values: tuple[Any, ...],
        input_json: str,
        kind: str,
        started: float,
    ) -> tuple[Any, StepRecord | None]:
        """One attempt → (result, the step still to record, or None if its session did)."""
        if activity.is_async:
            try:
                call = activity.fn(actx, *values)
                result = await (
                    asyncio.wait_for(call, activity.timeout) if activity.timeout else call
                )
                step = self._completed(activity, actx, result, input_json, kind, started)
                return result, self._commit_in_session(session, step)
            except TimeoutError:
                raise ActivityTimeoutError(activity.name, activity.timeout or 0) from None
            finally:
                session.rollback()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(
            self.host.executor,
            contextvars.copy_context().run,
            self._sync_attempt,
            activity,
            actx,
            session,
            input_json,
            values,
            kind,
            started,
        )
        try:
            if activity.timeout is None:
                return await future
            return await asyncio.wait_for(asyncio.shield(future), activity.timeout)
        except TimeoutError:
            if not session.abandon():  # the thread won the race: its step is recorded
                return await future
            raise ActivityTimeoutError(activity.name, activity.timeout or 0) from None
        except asyncio.CancelledError:
            session.abandon()
            raise

    def _sync_attempt(
        self,
        activity: Activity[Any, Any],
        actx: ActivityContext,
        session: AttemptSession,
        input_json: str,
        values: tuple[Any, ...],
        kind: str,
        started: float,
    ) -> tuple[Any, StepRecord | None]:
        """The worker-thread side of a sync attempt; commits its own session if it has one."""
        try:
            result = activity.fn(actx, *values)
            if session.state == "abandoned":
                return result, None
            step = self._completed(activity, actx, result, input_json, kind, started)
            return result, self._commit_in_session(session, step)
        finally:
            session.rollback()

    def _completed(
        self,
        activity: Activity[Any, Any],
        actx: ActivityContext,
        result: Any,
        input_json: str,
        kind: str,
        started: float,
    ) -> StepRecord:
        output = activity.shape.encode_result(result)
        return StepRecord(
            self._instance_id, self.next_seq(), actx.step_id, kind, activity.name, "completed",
            input_json, output, None, actx.attempt, started, time.time(),
        )  # fmt: skip

    def _commit_in_session(self, session: AttemptSession, step: StepRecord) -> StepRecord | None:
        """Record ``step`` in the attempt's own transaction if it has one (exactly once);
        else hand it back for the engine to record."""
        if not session.is_open:
            return step
        if session.commit_step(step, self.owner):
            self.host.notify(self._instance_id, step)
        return None

    # the run as a whole

    async def run(self) -> Outcome:
        """Execute (or resume) the instance until it ends, waits, or loses its lease.

        Never raises but for the app closing (``CancelledError``): an infrastructure fault
        ends the run as ``paused`` without an outcome, so the instance is resumed later.
        """
        hooks = self.host.hooks
        if hooks is None:
            self._started = True
            return await self._run()
        info = self.hook_run = RunInfo(self._instance_id, self.workflow.name, not self._fresh)
        try:
            await hooks.began(info, self._store, self.host.gate.call)
            self._started = True  # a cancel() meanwhile is seen by _run on entry
            outcome = await self._run()
        except asyncio.CancelledError:
            hooks.ended(info, Outcome("stopped"))
            raise
        hooks.ended(info, outcome)
        return outcome

    async def _run(self) -> Outcome:
        try:
            if self._status == "compensating" or self.cancel_reason is not None:
                stored = error_from_json(self._stored_error) if self._stored_error else None
                return await self._unwind(stored)
            if self._status == "rolling_back":
                failed = await self._roll_back()
                if failed is not None:
                    return failed
            return await self._run_workflow()
        except LeaseLostSignal:
            log.warning(
                "%s: lease lost to another worker; stopped here", self._instance_id,
                extra=self._log_fields(),
            )  # fmt: skip
            return Outcome("stopped")
        except StoreFault as fault:
            log.warning(
                "%s: paused by a store fault (%s); resumed later", self._instance_id, fault,
                extra=self._log_fields(),
            )  # fmt: skip
            self._release_quietly()
            return Outcome("paused", error=fault.error)
        except (Exception, EngineSignal) as error:  # an engine bug: never the user's failure
            log.exception(
                "%s: run stopped by an engine error; resumed later", self._instance_id,
                extra=self._log_fields(),
            )  # fmt: skip
            self._release_quietly()
            return Outcome("paused", error=error)

    def _release_quietly(self) -> None:
        """Give the lease back if the store lets us; if not, this worker's recovery finds
        the instance (leased here, with no run) and resumes it."""
        try:
            self.store.release_instance(self._instance_id, self.owner)
        except Exception as error:
            log.warning(
                "%s: could not release the lease (%s)", self._instance_id, error,
                extra=self._log_fields(),
            )  # fmt: skip

    async def _run_workflow(self) -> Outcome:
        shape = self.workflow.shape
        try:
            args = (
                self._args
                if self._args is not None
                else shape.decode_input(self._input_json, f"instance {self._instance_id}")
            )
            result = await self.workflow.fn(self.ctx, *args)
            if self.violation is not None:
                raise self.violation
            output = shape.encode_result(result)
        except asyncio.CancelledError:
            if self.cancel_reason is None:  # the app is closing: leave it for the next start
                self._release_quietly()
                raise
            _uncancel()
            return await self._unwind(None)
        except CancelSignal as signal:
            self.suspension.cancel_reason = signal.reason
            return await self._unwind(None)
        except SuspendSignal as signal:  # a wait or recur (engine/waiting.py)
            if self._unflushed or self._cut:
                await self._flush()
            return await self.suspension.suspended(signal, self.next_seq(), self._input_json)
        except EngineSignal:
            raise
        except Exception as error:
            if self.violation is not None:
                return await self._diverged()
            return await self._unwind(error)
        finished = await self.write(
            self.store.finish_instance, self._instance_id, self.owner, "completed", output, None
        )
        if not finished:
            raise LeaseLostSignal(self._instance_id)
        return Outcome("completed", result)

    async def _diverged(self) -> Outcome:
        log.error("%s: %s", self._instance_id, self.violation, extra=self._log_fields())
        await self.host.gate.call(self.store.release_instance, self._instance_id, self.owner)
        return Outcome("diverged", error=self.violation)

    async def _unwind(self, error: BaseException | None) -> Outcome:
        """Run pending compensations in reverse order, then end failed or cancelled."""
        error_json = error_to_json(error) if error is not None else self._stored_error
        history = await self.write(self.store.load_history, self._instance_id)
        pending = saga.pending(history, self.host.registry)
        if pending:
            compensating = await self.write(
                self.store.set_status, self._instance_id, self.owner, "compensating", error_json
            )
            if not compensating:
                raise LeaseLostSignal(self._instance_id)
            self._seq = itertools.count(max((s.seq for s in history), default=0) + 1)
            await saga.compensate(self, pending)
        cancelled = self.cancel_reason is not None
        status = "cancelled" if cancelled else "failed"
        finished = await self.write(
            self.store.finish_instance, self._instance_id, self.owner, status, None, error_json
        )
        if not finished:
            raise LeaseLostSignal(self._instance_id)
        if cancelled:
            return Outcome(status, error=WorkflowCancelled(self._instance_id, self.cancel_reason))
        return Outcome(status, error=error)

    async def _roll_back(self) -> Outcome | None:
        """``app.rollback``: compensate the completed steps after the marked step (newest
        first, each once, durably), archive them, and go on forwards from there.

        Every compensation is a recorded step, so a crash in the middle resumes here with
        the ones not yet run. If one fails for good the others still run, then the instance
        ends ``failed`` (not resumed: an undo that did not happen must not be built on).
        """
        try:
            history = await self.write(self.store.load_history, self._instance_id)
            through = cuts.marked_target(history) or cuts.Target(None, 0)
            later = [s for s in history if s.seq > through.seq]
            self._seq = itertools.count(max((s.seq for s in history), default=0) + 1)
            failed = await saga.compensate(self, saga.pending(later, self.host.registry))
            if failed:
                error = RomancyError(
                    f"rolling back instance {self._instance_id!r} to {through.step_id}: the "
                    f"compensation of {', '.join(failed)} failed; the instance was not resumed "
                    "(the failed compensations are in its history)",
                    instance_id=self._instance_id,
                    steps=failed,
                )
                finished = await self.write(
                    self.store.finish_instance, self._instance_id, self.owner, "failed", None,
                    error_to_json(error),
                )  # fmt: skip
                if not finished:
                    raise LeaseLostSignal(self._instance_id)
                return Outcome("failed", error=error)
            history = await self.write(self.store.load_history, self._instance_id)
            cut = cuts.cut(history, through, "rolled_back")
            run_no = await self.write(
                self.store.cut_history, self._instance_id, self.owner, cut, time.time()
            )
            kept = cuts.kept(history, through)
            self.rollback_change = cuts.rolled_back(self._instance_id, history, kept, run_no)
            self._load(kept, ())
            self._status = "running"
            self.host.notify(self._instance_id)
            return None
        finally:
            if self.rolled_back is not None:
                self.rolled_back.set()

    async def compensate_step(self, step: StepRecord, activity: Activity[Any, Any]) -> None:
        """Run the compensation of one completed step as a recorded step of its own.

        The step's stored arguments are decoded here, inside the compensation: arguments
        that no longer fit the activity's signature (it changed while the instance waited)
        are recorded as a failed compensation, never skipped silently.
        """
        compensator = activity.compensator
        assert compensator is not None
        try:
            values = activity.shape.decode_args(
                step.input or "[]", f"instance {self._instance_id}, step {step.step_id}"
            )
            input_json = compensator.shape.encode_args(values)
        except Exception as error:
            failure = SerializationError(
                f"cannot compensate step {step.step_id}: its recorded arguments no longer fit "
                f"{activity.name!r} ({error}); undo it by hand",
                what=f"the arguments of {activity.name!r}",
            )
            await self.record_compensation_failure(step, failure)
            raise failure from error
        await self._execute(compensator, saga.step_id_for(step), values, input_json, "compensation")

    async def record_compensation_failure(self, step: StepRecord, error: BaseException) -> None:
        at = time.time()
        record = StepRecord(
            self._instance_id, self.next_seq(), saga.step_id_for(step), "compensation",
            f"{step.name}.compensation", "failed", step.input, None, error_to_json(error),
            0, at, at,
        )  # fmt: skip
        await self.record(record)


async def _replayed(recorded: StepRecord, shape: CallShape) -> Any:
    if recorded.status == "completed":
        return shape.decode_result(
            recorded.output, f"instance {recorded.instance_id}, step {recorded.step_id}"
        )
    raise error_from_json(recorded.error or "{}")


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
