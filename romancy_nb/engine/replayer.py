"""Replay an instance against its history with the current code, writing nothing.

This is the engine side of replay debugging (``%romancy replay ID`` in a notebook) and the
honest way to measure replay: one bulk history read, then the workflow code runs and every
step it asks for is answered from history and checked for determinism. The run stops — before
acting — at the first step history does not hold, or at the first divergence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from romancy_nb.engine.gate import StoreGate
from romancy_nb.engine.runner import WorkflowRun
from romancy_nb.engine.signals import ReplayFrontier, SuspendSignal
from romancy_nb.errors import DeterminismViolation, WorkflowNotFound

if TYPE_CHECKING:
    from romancy_nb.engine.app import App
    from romancy_nb.store import StepRecord, Store
    from romancy_nb.store.protocol import WaitSpec

_READS = ("get_", "load_", "list_", "find_", "read_")


class _ReadOnlyStore:
    """The store as a replay sees it: reads pass, any write ends the replay."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name.startswith(_READS) or not callable(attribute):
            return attribute

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise ReplayFrontier(f"the next step would write ({name})")

        return refuse


class _ReplayHost:
    """The :class:`~romancy_nb.engine.runtime.RunHost` of a replay: the app's definitions
    and settings, a read-only store, and nowhere to launch or report anything."""

    committer = None
    executor = None

    def __init__(self, app: App) -> None:
        self.store = cast("Store", _ReadOnlyStore(app.store))
        self.gate = StoreGate()
        self.registry = app.registry
        self.worker_id = app.worker_id
        self.default_retry = app.default_retry

    def notify(self, instance_id: str, step: StepRecord | None = None) -> None:
        pass

    async def relaunch(
        self, instance_id: str, input_json: str, values: tuple[Any, ...] | None, *, fresh: bool
    ) -> None:
        raise ReplayFrontier("the workflow would run again (recur)")

    def waits_registered(self, waits: list[WaitSpec]) -> None:
        pass

    def message_published(self, channel: str) -> None:
        pass


@dataclass(frozen=True)
class ReplayReport:
    """What replaying an instance showed.

    ``outcome`` is ``completed`` (the code reached its end from history alone),
    ``frontier`` (it stopped at a step history does not hold: ``stopped_at`` says which),
    ``diverged`` (``error`` is the :class:`DeterminismViolation`), or ``failed`` (the
    workflow code raised ``error``).
    """

    instance_id: str
    outcome: str
    replayed: int
    recorded: int
    seconds: float
    result: Any = None
    error: BaseException | None = None
    stopped_at: str | None = None
    steps: list[str] = field(default_factory=list)


async def replay(app: App, instance_id: str) -> ReplayReport:
    """Re-run ``instance_id`` from its history with the current definitions; write nothing."""
    record = app.store.get_instance(instance_id)
    if record is None:
        raise WorkflowNotFound(f"no instance {instance_id!r}", instance_id=instance_id)
    workflow = app.registry.workflow(record.workflow_name)
    history = app.store.load_history(instance_id)
    started = time.perf_counter()
    run = WorkflowRun(
        _ReplayHost(app),
        workflow,
        instance_id,
        input_json=record.input,
        history=history,
    )
    run.replay_only = True
    recorded = run.to_replay
    outcome, result, error, stopped_at = "completed", None, None, None
    try:
        result = await workflow.fn(run.ctx, *workflow.shape.decode_input(record.input))
    except ReplayFrontier as frontier:
        outcome, stopped_at = "frontier", frontier.what
    except SuspendSignal as signal:
        outcome, stopped_at = "frontier", f"the workflow would wait ({signal.status})"
    except Exception as raised:
        outcome, error = "failed", raised
    if run.violation is not None:
        outcome, error, result = "diverged", run.violation, None
    return ReplayReport(
        instance_id,
        outcome,
        recorded - run.to_replay,
        recorded,
        time.perf_counter() - started,
        result,
        error,
        stopped_at,
        list(run.replayed_steps),
    )


__all__ = ["DeterminismViolation", "ReplayReport", "replay"]
