"""Hooks: callbacks on the life of runs and activities, for tracing, metrics and alerts.

``App(hooks=...)`` takes one :class:`Hooks` or a sequence of them. The engine reports to
them on the event loop, in order:

* a run begins: ``workflow_started`` (nothing is recorded for the instance yet: a new
  start, or a start another worker took over before its first step) or
  ``workflow_resumed`` (it replays recorded history: woken from a wait, recovered);
* each activity attempt: ``activity_started``, then ``activity_completed``,
  ``activity_retried`` (it runs again after ``delay``) or ``activity_failed`` (for good);
  compensations too (``ActivityCall.kind == "compensation"``);
* ``replay_diverged`` when the code no longer matches the recorded history;
* the run ends, exactly one of: ``workflow_completed``, ``workflow_failed``,
  ``workflow_cancelled``, ``workflow_suspended`` (it waits; a later run resumes it) or
  ``workflow_stopped`` (the instance lives on without waiting: its lease was lost, the
  store failed under it, it recurred, its code diverged, or the app is closing).

Every method is optional. :class:`Hooks` is a base class whose methods do nothing, not a
``Protocol``: a subclass overrides what it needs and keeps the signatures type-checked,
and :class:`HookSet` calls only the methods a hook overrides, so an event nobody listens
to costs nothing (and ``App()`` without hooks costs one ``is None`` test per step). A
hook that raises is logged and ignored: observing a workflow never changes what it does.

Trace context: ``RunInfo.trace`` is a dict of W3C trace headers (``traceparent``,
``tracestate``). What a hook puts in it in ``workflow_started`` is saved with the
instance; every later run of the instance (in any process) receives it in
``workflow_resumed``, so one trace follows an instance across its waits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from romancy_nb.engine import logs
from romancy_nb.engine.signals import StoreFault

if TYPE_CHECKING:
    from romancy_nb.engine.outcome import Outcome
    from romancy_nb.errors import DeterminismViolation, WorkflowCancelled
    from romancy_nb.store import Store

log = logs.log


@dataclass(eq=False, slots=True)
class RunInfo:
    """One run of one instance, from its start or resume to its end in this process.

    Compared by identity: a hook may key its own state (an open span) by it.
    """

    instance_id: str
    workflow: str
    resumed: bool
    """False for ``workflow_started``, True for ``workflow_resumed``."""
    trace: dict[str, str] = field(default_factory=dict)
    """The instance's trace headers; filled by a hook at the start, saved, given back later."""


@dataclass(frozen=True, slots=True)
class ActivityCall:
    """One attempt of one activity (or compensation) step."""

    run: RunInfo
    step_id: str
    activity: str
    kind: str
    """``"activity"`` or ``"compensation"``."""
    attempt: int


class Hooks:
    """Override the methods you need; each one does nothing here. See the module doc."""

    def workflow_started(self, run: RunInfo) -> None:
        """A run begins with nothing recorded; put trace headers in ``run.trace`` to keep them."""

    def workflow_resumed(self, run: RunInfo) -> None:
        """A run begins that replays recorded history; ``run.trace`` is what was kept."""

    def workflow_suspended(self, run: RunInfo, status: str) -> None:
        """The run ends and the instance waits; ``status`` says for what."""

    def workflow_completed(self, run: RunInfo, result: Any) -> None:
        """The instance completed with ``result``."""

    def workflow_failed(self, run: RunInfo, error: BaseException) -> None:
        """The instance failed with ``error`` (after its compensations ran)."""

    def workflow_cancelled(self, run: RunInfo, error: WorkflowCancelled) -> None:
        """The instance was cancelled (``error.reason``), after its compensations ran."""

    def workflow_stopped(self, run: RunInfo, status: str, error: BaseException | None) -> None:
        """The run ends without ending or suspending the instance: ``status`` is
        ``stopped`` (lease lost, app closing), ``paused`` (store fault), ``recurred`` or
        ``diverged``; another run takes over later."""

    def activity_started(self, call: ActivityCall) -> None:
        """An attempt begins (on the event loop, before the activity body runs)."""

    def activity_completed(self, call: ActivityCall) -> None:
        """The attempt succeeded and its step is recorded."""

    def activity_retried(self, call: ActivityCall, error: BaseException, delay: float) -> None:
        """The attempt failed with ``error``; the step runs again after ``delay`` seconds."""

    def activity_failed(self, call: ActivityCall, error: BaseException) -> None:
        """The step failed for good (retries exhausted, a terminal error)."""

    def replay_diverged(self, run: RunInfo, violation: DeterminismViolation) -> None:
        """The code asked for something else than history holds (see ``on_divergence``)."""


_EVENTS = tuple(name for name in vars(Hooks) if not name.startswith("_"))


class HookSet:
    """The hooks of an app, dispatched: each event goes to the hooks that override it."""

    __slots__ = ("_hooks", "_listeners")

    def __init__(self, hooks: Sequence[Hooks]) -> None:
        self._hooks = tuple(hooks)
        self._listeners: dict[str, tuple[Any, ...]] = {
            name: tuple(
                getattr(hook, name)
                for hook in self._hooks
                if getattr(type(hook), name, None) is not getattr(Hooks, name)
            )
            for name in _EVENTS
        }

    @classmethod
    def of(cls, hooks: Hooks | Sequence[Hooks] | None) -> HookSet | None:
        """The dispatcher for ``App(hooks=...)``; None when there is nothing to call."""
        if hooks is None:
            return None
        given = [hooks] if isinstance(hooks, Hooks) else list(hooks)
        for hook in given:
            if not isinstance(hook, Hooks):
                raise TypeError(f"hooks must be rn.Hooks objects (subclass rn.Hooks), not {hook!r}")
        found = cls(given)
        return found if any(found._listeners.values()) else None

    @property
    def hooks(self) -> tuple[Hooks, ...]:
        return self._hooks

    def emit(self, event: str, subject: RunInfo | ActivityCall, *args: Any) -> None:
        """Call ``event`` on every hook that overrides it; one that raises is logged."""
        for method in self._listeners[event]:
            try:
                method(subject, *args)
            except Exception:
                run = subject if isinstance(subject, RunInfo) else subject.run
                step_id = subject.step_id if isinstance(subject, ActivityCall) else None
                log.exception(
                    "%s: hook %s raised; ignored",
                    run.instance_id,
                    getattr(method, "__qualname__", method),
                    extra=logs.fields(run.instance_id, run.workflow, step_id),
                )

    async def began(self, run: RunInfo, store: Store, call: Any) -> None:
        """A run begins: report it, and save (started) or read back (resumed) the trace
        headers through ``call`` (the run's store gate). A store that fails here is
        logged: tracing never stops a workflow."""
        try:
            if not run.resumed:
                self.emit("workflow_started", run)
                if run.trace:
                    await call(store.save_trace_context, run.instance_id, json.dumps(run.trace))
                return
            if self._listeners["workflow_resumed"]:
                saved = await call(store.load_trace_context, run.instance_id)
                run.trace = json.loads(saved) if saved else {}
        except (Exception, StoreFault) as error:
            log.warning(
                "%s: the trace context could not be %s (%s)",
                run.instance_id,
                "read" if run.resumed else "saved",
                error,
                extra=logs.fields(run.instance_id, run.workflow),
            )
        if run.resumed:
            self.emit("workflow_resumed", run)

    def ended(self, run: RunInfo, outcome: Outcome) -> None:
        """A run ended with ``outcome``: report the one event it means."""
        status = outcome.status
        if status == "completed":
            self.emit("workflow_completed", run, outcome.value)
        elif status == "failed":
            self.emit("workflow_failed", run, outcome.error)
        elif status == "cancelled":
            self.emit("workflow_cancelled", run, outcome.error)
        elif status == "suspended":
            self.emit("workflow_suspended", run, outcome.value)
        else:
            self.emit("workflow_stopped", run, status, outcome.error)


__all__ = ["ActivityCall", "HookSet", "Hooks", "RunInfo"]
