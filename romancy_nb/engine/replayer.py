"""Replay an instance against its history with the current code, writing nothing.

This is the engine side of replay debugging (``%romancy replay ID`` in a notebook) and the
honest way to measure replay: one bulk history read, then the workflow code runs and every
step it asks for is answered from history and checked for determinism. The run stops — before
acting — at the first step history does not hold, or at the first divergence; the report
still lists every recorded step, the ones after the stop as ``not reached``.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

from romancy_nb.engine.gate import StoreGate
from romancy_nb.engine.info import decode_json
from romancy_nb.engine.replay import Asked
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
    hooks = None
    on_divergence = "error"

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

    def outbox_written(self) -> None:
        pass


_WAIT_KINDS = ("sleep", "wait_event", "receive")


@dataclass(frozen=True)
class ReplayStep:
    """One row of a replay report: a step the code asked for, a recorded step it did not
    reach, or both.

    ``status`` is ``matched`` (history answered it), ``diverged`` (the code asked for a
    different name or input under this step id: ``diff`` says how), ``would execute`` or
    ``would wait`` (history does not hold it: a live run would run or wait on it now), or
    ``not reached`` (recorded, but the replay stopped before the code asked for it; a
    rewind to before it would archive it). Inputs and outputs are decoded from JSON.
    """

    step_id: str
    kind: str
    name: str
    status: str
    recorded_input: Any = None
    recorded_output: Any = None
    recorded_status: str | None = None
    asked_name: str | None = None
    asked_input: Any = None
    diff: str | None = None
    seq: int | None = None


@dataclass(frozen=True)
class ReplayReport:
    """What replaying an instance showed.

    ``outcome`` is ``completed`` (the code reached its end from history alone),
    ``frontier`` (it stopped at a step history does not hold: ``stopped_at`` says which),
    ``diverged`` (``error`` is the :class:`DeterminismViolation`), or ``failed`` (the
    workflow code raised ``error``). ``rows`` has one :class:`ReplayStep` per step, in the
    order the code asked for them, then the recorded steps it never reached; ``records()``
    gives them as dicts (``pandas.DataFrame(report.records())``).
    """

    instance_id: str
    outcome: str
    replayed: int
    recorded: int
    seconds: float
    result: Any = None
    error: BaseException | None = None
    stopped_at: str | None = None
    journal: list[Asked] = field(default_factory=list, repr=False)
    """What the code asked for, in order (the raw material of ``rows``)."""
    history: list[StepRecord] = field(default_factory=list, repr=False)
    """The history replayed against."""

    @functools.cached_property
    def rows(self) -> list[ReplayStep]:
        """One :class:`ReplayStep` per step; built (values decoded) when first read, so a
        replay that is only timed or checked for its outcome pays nothing for them."""
        return _rows(self.journal, self.history)

    @property
    def steps(self) -> list[str]:
        """Ids of the steps history answered, in the order the code asked for them."""
        return [a.step_id for a in self.journal if a.recorded is not None and a.violation is None]

    @property
    def diverged_at(self) -> str | None:
        """The first diverging step's id, or None."""
        return next((a.step_id for a in self.journal if a.violation is not None), None)

    def records(self) -> list[dict[str, Any]]:
        """The rows as plain dicts, one per step (the columns of a DataFrame)."""
        return [asdict(row) for row in self.rows]


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
        run.journal or [],
        history,
    )


def _rows(journal: list[Asked], history: list[StepRecord]) -> list[ReplayStep]:
    rows = [_asked_row(asked) for asked in journal]
    answered = {asked.step_id for asked in journal if asked.recorded is not None}
    rows += [
        _recorded_row(step, "not reached")
        for step in sorted(history, key=lambda s: s.seq)
        if step.step_id not in answered and step.kind != "rollback"
    ]
    return rows


def _asked_row(asked: Asked) -> ReplayStep:
    if asked.recorded is None:
        status = "would wait" if asked.kind in _WAIT_KINDS else "would execute"
        return ReplayStep(
            asked.step_id, asked.kind, asked.name, status,
            asked_name=asked.name, asked_input=decode_json(asked.input),
        )  # fmt: skip
    if asked.violation is None:
        return _recorded_row(asked.recorded, "matched")
    return replace(
        _recorded_row(asked.recorded, "diverged"),
        asked_name=asked.name,
        asked_input=decode_json(asked.input),
        diff=asked.violation.diff,
    )


def _recorded_row(step: StepRecord, status: str) -> ReplayStep:
    output = decode_json(step.output) if step.status != "failed" else decode_json(step.error)
    return ReplayStep(
        step.step_id, step.kind, step.name, status, decode_json(step.input), output, step.status,
        seq=step.seq,
    )  # fmt: skip


__all__ = ["DeterminismViolation", "ReplayReport", "ReplayStep", "replay"]
