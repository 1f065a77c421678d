"""Which steps of a history survive a rewind, a rollback, a retry, a fork or a divergence.

A history is a set of steps keyed by step id, and replay matches steps by id, so any subset
of a history is a history a run can resume from: the steps kept are answered from it, the
others execute again. These functions choose the subset; the store applies the choice in one
transaction (``Store.cut_history``) and archives what goes.

Two rules hold for every cut:

- A step whose compensation completed is never kept: its effect was undone, so keeping its
  result would resume the workflow on a side effect that no longer exists. It executes
  again. (A step whose compensation *failed* is kept: its effect is presumably still there.)
- Compensation steps and a rollback's marker are never kept: they belong to an unwinding,
  and the instance resumes forwards.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from romancy_nb.errors import InvalidWorkflowState, StepNotFound
from romancy_nb.store.protocol import HistoryCut, StepRecord

UNWINDING_KINDS = ("compensation", "rollback")
"""Kinds of steps that undo (or mark an undoing) rather than move the workflow forwards."""

ROLLBACK_MARKER = "@rollback"
"""The step id of a rollback's marker: ``to`` and ``seq`` of the step rolled back to."""

_COMPENSATION_PREFIX = "compensate:"


@dataclass(frozen=True)
class HistoryChange:
    """What a rewind, rollback or retry did to an instance's history.

    ``kept`` are the steps it resumes from, ``archived`` those moved into archived run
    ``archived_run`` (0: none; see ``app.archived_runs``), ``compensated`` the steps a
    rollback undid, in the order their compensations ran. ``status`` is the instance's
    status when the call returned (``running`` while it goes on).
    """

    instance_id: str
    operation: str
    kept: list[str]
    archived: list[str]
    archived_run: int
    compensated: list[str] = field(default_factory=list)
    status: str = "running"


@dataclass(frozen=True)
class Target:
    """The last step a cut keeps: its id (None: none, cut from the start) and ``seq``."""

    step_id: str | None
    seq: int


def target(history: Sequence[StepRecord], to: str | None, instance_id: str) -> Target:
    """The step ``to`` names, checked: it exists, and it moves the workflow forwards.

    Raises :class:`StepNotFound` for an unknown id and :class:`InvalidWorkflowState` for a
    compensation, a rollback marker, or a step recorded after an unwinding began (there is
    no forward state to return to there).
    """
    if to is None:
        return Target(None, 0)
    if not isinstance(to, str):
        raise TypeError(f"the step must be a step id (str) or None, not {type(to).__name__}")
    step = next((s for s in history if s.step_id == to), None)
    if step is None:
        known = ", ".join(s.step_id for s in history if s.kind not in UNWINDING_KINDS)
        raise StepNotFound(
            f"instance {instance_id!r} has no step {to!r} (its steps: {known or 'none'})",
            instance_id=instance_id,
            step_id=to,
        )
    unwinding = min((s.seq for s in history if s.kind in UNWINDING_KINDS), default=None)
    if step.kind in UNWINDING_KINDS or (unwinding is not None and step.seq > unwinding):
        raise InvalidWorkflowState(
            f"step {to!r} of instance {instance_id!r} belongs to an unwinding "
            "(compensations); pick a step recorded before the first compensation",
            instance_id=instance_id,
            step_id=to,
        )
    return Target(step.step_id, step.seq)


def undone(history: Sequence[StepRecord]) -> set[str]:
    """Ids of the steps whose compensation completed."""
    return {
        s.step_id[len(_COMPENSATION_PREFIX) :]
        for s in history
        if s.kind == "compensation" and s.status == "completed"
    }


def kept(history: Sequence[StepRecord], through: Target) -> list[StepRecord]:
    """The steps a cut after ``through`` keeps, in recording order."""
    gone = undone(history)
    return [
        s
        for s in sorted(history, key=lambda s: s.seq)
        if s.seq <= through.seq and s.kind not in UNWINDING_KINDS and s.step_id not in gone
    ]


def failed_tail(history: Sequence[StepRecord]) -> Target:
    """Where ``app.retry`` cuts: before the failed (or timed-out) steps that ended the run.

    The failure that ended a run is its last forward step (or the last few, when concurrent
    steps failed together); earlier failures the code caught are results and stay.
    """
    forward = sorted((s for s in history if s.kind not in UNWINDING_KINDS), key=lambda s: s.seq)
    end = len(forward)
    while end and forward[end - 1].status in ("failed", "timed_out"):
        end -= 1
    if end == 0:
        return Target(None, 0)
    last = forward[end - 1]
    return Target(last.step_id, last.seq)


def cut(
    history: Sequence[StepRecord],
    through: Target,
    archived_as: str,
    status: str = "running",
    *,
    marker: StepRecord | None = None,
    keep: Sequence[StepRecord] | None = None,
) -> HistoryCut:
    """The cut that keeps ``keep`` (by default :func:`kept` through ``through``) and
    archives every other step of ``history``, with the subscriptions and groups the kept
    steps imply."""
    staying = kept(history, through) if keep is None else list(keep)
    seqs = {s.seq for s in staying}
    going = [s for s in history if s.seq not in seqs]
    subscriptions, groups = membership(staying)
    touched_channels, touched_groups = _touched(going)
    return HistoryCut(
        archive=[s.seq for s in going],
        archived_as=archived_as,
        cut_after=through.step_id,
        status=status,
        subscriptions=sorted(subscriptions.items()),
        unsubscribe=sorted(touched_channels - subscriptions.keys()),
        groups=sorted(groups),
        leave=sorted(touched_groups - groups),
        marker=marker,
    )


def membership(steps: Sequence[StepRecord]) -> tuple[dict[str, str], set[str]]:
    """The channels (with their mode) and groups that ``steps`` leave the instance in."""
    channels: dict[str, str] = {}
    groups: set[str] = set()
    for step in sorted(steps, key=lambda s: s.seq):
        if step.status != "completed":
            continue
        arguments = _arguments(step)
        if step.kind == "subscribe":
            channels[arguments["channel"]] = arguments["mode"]
        elif step.kind == "unsubscribe":
            channels.pop(arguments["channel"], None)
        elif step.kind == "join_group":
            groups.add(arguments["group"])
        elif step.kind == "leave_group":
            groups.discard(arguments["group"])
    return channels, groups


def _touched(steps: Sequence[StepRecord]) -> tuple[set[str], set[str]]:
    channels = {_arguments(s)["channel"] for s in steps if s.kind in ("subscribe", "unsubscribe")}
    groups = {_arguments(s)["group"] for s in steps if s.kind in ("join_group", "leave_group")}
    return channels, groups


def _arguments(step: StepRecord) -> dict[str, str]:
    value = json.loads(step.input or "{}")
    return value if isinstance(value, dict) else {}


def marker(instance_id: str, through: Target, seq: int, at: float) -> StepRecord:
    """The step that says "this instance is rolling back to ``through``" (durably)."""
    to = json.dumps({"to": through.step_id, "seq": through.seq})
    return StepRecord(
        instance_id, seq, ROLLBACK_MARKER, "rollback", "rollback", "running", to, None, None,
        1, at, at,
    )  # fmt: skip


def rolled_back(
    instance_id: str, history: Sequence[StepRecord], kept: Sequence[StepRecord], run_no: int
) -> HistoryChange:
    """The account of a finished rollback: ``history`` as it was before its cut."""
    staying = {s.seq for s in kept}
    ordered = sorted(history, key=lambda s: s.seq)
    return HistoryChange(
        instance_id,
        "rollback",
        [s.step_id for s in ordered if s.seq in staying],
        [s.step_id for s in ordered if s.seq not in staying and s.kind not in UNWINDING_KINDS],
        run_no,
        [
            s.step_id.removeprefix(_COMPENSATION_PREFIX)
            for s in ordered
            if s.kind == "compensation"
            and s.status == "completed"
            and s.seq > max(staying, default=0)
        ],
    )


def marked_target(history: Sequence[StepRecord]) -> Target | None:
    """Where the rollback under way (its marker in ``history``) goes back to."""
    step = next((s for s in history if s.step_id == ROLLBACK_MARKER), None)
    if step is None:
        return None
    to = json.loads(step.input or "{}")
    return Target(to.get("to"), int(to.get("seq", 0)))


__all__ = [
    "ROLLBACK_MARKER",
    "UNWINDING_KINDS",
    "HistoryChange",
    "Target",
    "cut",
    "failed_tail",
    "kept",
    "marked_target",
    "marker",
    "membership",
    "rolled_back",
    "target",
    "undone",
]
