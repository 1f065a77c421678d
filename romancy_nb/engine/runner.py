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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from romancy_nb.engine import codec, replay, retry, saga
from romancy_nb.engine.context import ActivityContext, WorkflowContext
from romancy_nb.engine.failures import (
    attempt_error,
    attempt_from_json,
    error_from_json,
    error_to_json,
)
from romancy_nb.engine.signals import (
    CancelSignal,
    EngineSignal,
    LeaseLostSignal,
    ReplayFrontier,
    SuspendSignal,
)
from romancy_nb.engine.waiting import WaitingRun
from romancy_nb.errors import (
    ActivityTimeoutError,
    DeterminismViolation,
    RetryExhaustedError,
    SerializationError,
    TerminalError,
    WorkflowCancelled,
)
from romancy_nb.store import AttemptRecord, StepRecord

if TYPE_CHECKING:
    from romancy_nb.engine.app import App
    from romancy_nb.engine.definitions import Activity, Workflow

log = logging.getLogger("romancy_nb")

_DETERMINISTIC_TYPES: dict[str, Any] = {"now": datetime, "uuid": uuid.UUID, "random": float}
_DETERMINISTIC_MAKERS: dict[str, Any] = {
    "now": lambda: datetime.now(UTC),
    "uuid": uuid.uuid4,
    "random": random.random,
}


@dataclass
class Outcome:
    """How a run ended: completed / failed / cancelled (final), or suspended / stopped /
    diverged (the instance lives on and is resumed later)."""

    status: str
    value: Any = None
    error: BaseException | None = None


class WorkflowRun(WaitingRun):
    """One execution (first run or replay) of one instance in this process."""

    def __init__(
        self,
        app: App,
        workflow: Workflow[Any, Any],
        instance_id: str,
        *,
        input_json: str,
        args: tuple[Any, ...] | None = None,
        history: list[StepRecord] = (),  # type: ignore[assignment]
        attempts: list[AttemptRecord] = (),  # type: ignore[assignment]
        status: str = "running",
        stored_error: str | None = None,
        cancel_reason: str | None = None,
    ) -> None:
        self.app = app
        self.workflow = workflow
        self.instance_id = instance_id
        self.owner = app.worker_id
        self.ctx = WorkflowContext(self)
        self.cancel_reason = cancel_reason
        self.violation: DeterminismViolation | None = None
        self.task: asyncio.Task[Outcome] | None = None
        self._input_json = input_json
        self._args = args
        self._status = status
        self._stored_error = stored_error
        self._history = {step.step_id: step for step in history}
        self._to_replay = sum(1 for step in history if step.kind != "compensation")
        self._seq = itertools.count(max((step.seq for step in history), default=0) + 1)
        self._attempts: dict[str, list[AttemptRecord]] = {}
        for record in attempts:
            self._attempts.setdefault(record.step_id, []).append(record)
        self._ids = replay.StepIds()
        self.replay_only = False
        """Set by the replayer: answer steps from history only, write and execute nothing."""
        self.replayed_steps: list[str] = []
        self._started = False

    def cancel(self, reason: str) -> None:
        """Stop the workflow code where it awaits and unwind (compensate, then cancelled)."""
        if self.cancel_reason is not None:
            return
        self.cancel_reason = reason
        # A task cancelled before its first step never enters run(); run() checks the
        # reason on entry instead.
        if self._started and self.task is not None:
            self.task.cancel()

    # what the context asks

    @property
    def is_replaying(self) -> bool:
        return self._to_replay > 0

    def _recorded(self, step_id: str, kind: str, name: str, input_json: str | None) -> Any:
        recorded = self._history.get(step_id)
        if recorded is None:
            return None
        if recorded.kind != kind or recorded.name != name or recorded.input != input_json:
            self.violation = replay.violation(self.instance_id, recorded, kind, name, input_json)
            raise self.violation
        self._to_replay -= 1
        if self.replay_only:
            self.replayed_steps.append(step_id)
        return recorded

    def call_activity(
        self,
        activity: Activity[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        activity_id: str | None,
    ) -> Any:
        step_id = self._ids.take(activity.name, activity_id, self.instance_id)
        shape = activity.shape
        values = shape.bind(args, kwargs)
        input_json = shape.encode_args(values)
        recorded = self._recorded(step_id, "activity", activity.name, input_json)
        if recorded is not None:
            return _replayed(recorded, shape)
        return self._execute(activity, step_id, values, input_json, "activity")

    def deterministic(self, kind: str, _: None) -> Any:
        step_id = self._ids.take(kind, None, self.instance_id)
        tp = _DETERMINISTIC_TYPES[kind]
        recorded = self._recorded(step_id, kind, kind, None)
        if recorded is not None:
            return codec.decode(recorded.output, tp)
        value = _DETERMINISTIC_MAKERS[kind]()
        at = time.time()
        self._record(
            step_id, kind, kind, "completed", None, codec.encode(value, tp, kind), None, 1, at, at
        )
        return value

    # executing steps

    def _record(
        self,
        step_id: str,
        kind: str,
        name: str,
        status: str,
        input_json: str | None,
        output: str | None,
        error: str | None,
        attempts: int,
        started: float,
        finished: float,
        session: Any = None,
    ) -> None:
        step = StepRecord(
            self.instance_id,
            next(self._seq),
            step_id,
            kind,
            name,
            status,
            input_json,
            output,
            error,
            attempts,
            started,
            finished,
        )
        target = session if session is not None else self.app.store
        if not target.record_step(step, self.owner):
            if session is not None:
                session.rollback()
            raise LeaseLostSignal(self.instance_id)
        if session is not None:
            session.commit()
        if self.app._listeners:
            self.app._notify(self.instance_id, step)

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
        past = self._attempts.pop(step_id, [])
        errors = [attempt_from_json(r.attempt, r.error, r.at) for r in past]
        attempt = len(past)
        started = time.time()
        while True:
            attempt += 1
            actx = ActivityContext(self, activity, step_id, attempt)
            try:
                result, output, recorded = await self._attempt(
                    activity, actx, values, input_json, kind, started
                )
            except SerializationError as error:
                final: BaseException = error
                break
            except Exception as error:
                now = time.time()
                errors.append(attempt_error(attempt, error, now))
                self.app.store.record_attempt(
                    AttemptRecord(self.instance_id, step_id, attempt, error_to_json(error), now)
                )
                policy = retry.resolve(activity.retry, self.app.default_retry)
                if policy.should_retry(error, attempt):
                    delay = policy.delay(attempt)
                    log.info(
                        "%s %s attempt %d failed (%s); retrying in %.3g s",
                        self.instance_id,
                        step_id,
                        attempt,
                        error,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    continue
                if isinstance(error, TerminalError):
                    final = error
                else:
                    final = RetryExhaustedError(activity.name, step_id, errors)
                    final.__cause__ = error
                break
            if recorded:
                return result
            committer = self.app.committer
            if committer is None:
                self._record(
                    step_id,
                    kind,
                    activity.name,
                    "completed",
                    input_json,
                    output,
                    None,
                    attempt,
                    started,
                    time.time(),
                )
            else:
                step = StepRecord(
                    self.instance_id,
                    next(self._seq),
                    step_id,
                    kind,
                    activity.name,
                    "completed",
                    input_json,
                    output,
                    None,
                    attempt,
                    started,
                    time.time(),
                )
                if not await committer.record(step):
                    raise LeaseLostSignal(self.instance_id)
                if self.app._listeners:
                    self.app._notify(self.instance_id, step)
            return result
        self._record(
            step_id,
            kind,
            activity.name,
            "failed",
            input_json,
            None,
            error_to_json(final),
            attempt,
            started,
            time.time(),
        )
        raise final

    async def _attempt(
        self,
        activity: Activity[Any, Any],
        actx: ActivityContext,
        values: tuple[Any, ...],
        input_json: str,
        kind: str,
        started: float,
    ) -> tuple[Any, str, bool]:
        """One attempt → (result, its JSON, whether it was recorded in its own session)."""
        if activity.is_async:
            try:
                call = activity.fn(actx, *values)
                result = await (
                    asyncio.wait_for(call, activity.timeout) if activity.timeout else call
                )
                return (
                    result,
                    *self._finish_attempt(activity, actx, result, input_json, kind, started),
                )
            except TimeoutError:
                raise ActivityTimeoutError(activity.name, activity.timeout or 0) from None
            finally:
                if actx._session is not None and actx._state != "committed":
                    actx._session.rollback()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(
            self.app.executor,
            contextvars.copy_context().run,
            self._sync_attempt,
            activity,
            actx,
            values,
            input_json,
            kind,
            started,
        )
        try:
            if activity.timeout is None:
                return await future
            return await asyncio.wait_for(asyncio.shield(future), activity.timeout)
        except TimeoutError:
            with actx._guard:
                committed = actx._state == "committed"
                if not committed:
                    actx._state = "abandoned"
            if committed:  # the thread won the race: its step is recorded, use it
                return await future
            raise ActivityTimeoutError(activity.name, activity.timeout or 0) from None
        except asyncio.CancelledError:
            with actx._guard:
                if actx._state != "committed":
                    actx._state = "abandoned"
            raise

    def _sync_attempt(
        self,
        activity: Activity[Any, Any],
        actx: ActivityContext,
        values: tuple[Any, ...],
        input_json: str,
        kind: str,
        started: float,
    ) -> tuple[Any, str, bool]:
        """The worker-thread side of a sync attempt; commits its own session if it has one."""
        try:
            result = activity.fn(actx, *values)
            with actx._guard:
                if actx._state == "abandoned":
                    return result, "", False
                return (
                    result,
                    *self._finish_attempt(activity, actx, result, input_json, kind, started),
                )
        finally:
            if actx._session is not None and actx._state != "committed":
                actx._session.rollback()

    def _finish_attempt(
        self,
        activity: Activity[Any, Any],
        actx: ActivityContext,
        result: Any,
        input_json: str,
        kind: str,
        started: float,
    ) -> tuple[str, bool]:
        output = activity.shape.encode_result(result)
        if actx._session is None:
            return output, False
        self._record(
            actx.step_id,
            kind,
            activity.name,
            "completed",
            input_json,
            output,
            None,
            actx.attempt,
            started,
            time.time(),
            session=actx._session,
        )
        actx._state = "committed"
        return output, True

    # the run as a whole

    async def run(self) -> Outcome:
        """Execute (or resume) the instance until it ends, waits, or loses its lease."""
        self._started = True
        try:
            if self._status == "compensating" or self.cancel_reason is not None:
                stored = error_from_json(self._stored_error) if self._stored_error else None
                return await self._unwind(stored)
            return await self._run_workflow()
        except LeaseLostSignal:
            log.warning("%s: lease lost to another worker; stopped here", self.instance_id)
            return Outcome("stopped")
        except Exception as error:  # the store failed under us: leave the instance to recovery
            log.exception("%s: run stopped by an engine error", self.instance_id)
            self.app.store.release_instance(self.instance_id, self.owner)
            return Outcome("stopped", error=error)

    async def _run_workflow(self) -> Outcome:
        shape = self.workflow.shape
        try:
            args = self._args if self._args is not None else shape.decode_input(self._input_json)
            result = await self.workflow.fn(self.ctx, *args)
            if self.violation is not None:
                raise self.violation
            output = shape.encode_result(result)
        except asyncio.CancelledError:
            if self.cancel_reason is None:  # the app is closing: leave it for the next start
                self.app.store.release_instance(self.instance_id, self.owner)
                raise
            _uncancel()
            return await self._unwind(None)
        except CancelSignal as signal:
            self.cancel_reason = signal.reason
            return await self._unwind(None)
        except SuspendSignal as signal:  # a wait or recur (engine/waiting.py)
            return await self._suspended(signal)
        except EngineSignal:
            raise
        except Exception as error:
            if self.violation is not None:
                return self._diverged()
            return await self._unwind(error)
        if not self.app.store.finish_instance(
            self.instance_id, self.owner, "completed", output, None
        ):
            raise LeaseLostSignal(self.instance_id)
        return Outcome("completed", result)

    def _diverged(self) -> Outcome:
        log.error("%s: %s", self.instance_id, self.violation)
        self.app.store.release_instance(self.instance_id, self.owner)
        return Outcome("diverged", error=self.violation)

    async def _unwind(self, error: BaseException | None) -> Outcome:
        """Run pending compensations in reverse order, then end failed or cancelled."""
        error_json = error_to_json(error) if error is not None else self._stored_error
        history = self.app.store.load_history(self.instance_id)
        pending = saga.pending(history, self.app.registry)
        if pending:
            if not self.app.store.set_status(
                self.instance_id, self.owner, "compensating", error_json
            ):
                raise LeaseLostSignal(self.instance_id)
            self._seq = itertools.count(max((s.seq for s in history), default=0) + 1)
            await saga.compensate(self, pending)
        cancelled = self.cancel_reason is not None
        status = "cancelled" if cancelled else "failed"
        if not self.app.store.finish_instance(
            self.instance_id, self.owner, status, None, error_json
        ):
            raise LeaseLostSignal(self.instance_id)
        if cancelled:
            return Outcome(status, error=WorkflowCancelled(self.instance_id, self.cancel_reason))
        return Outcome(status, error=error)

    async def compensate_step(self, step: StepRecord, activity: Activity[Any, Any]) -> None:
        """Run the compensation of one completed step as a recorded step of its own."""
        compensator = activity.compensator
        assert compensator is not None
        values = activity.shape.decode_args(step.input or "[]")
        input_json = compensator.shape.encode_args(values)
        await self._execute(compensator, saga.step_id_for(step), values, input_json, "compensation")

    def record_compensation_failure(self, step: StepRecord, error: BaseException) -> None:
        at = time.time()
        self._record(
            saga.step_id_for(step),
            "compensation",
            f"{step.name}.compensation",
            "failed",
            step.input,
            None,
            error_to_json(error),
            0,
            at,
            at,
        )


async def _replayed(recorded: StepRecord, shape: codec.CallShape) -> Any:
    if recorded.status == "completed":
        return shape.decode_result(recorded.output)
    raise error_from_json(recorded.error or "{}")


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
