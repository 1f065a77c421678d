"""How stored instances and steps read to people: durations, waits, outcomes, errors.

Shared by the command line (``romancy-nb history``) and the notebook (the timeline,
``%romancy history``, ``%romancy list``), so a step reads the same everywhere. Plain text
only: the CLI styles it with rich, the notebook puts it in traitlets and DataFrames.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from romancy_nb.engine import HistoryChange, StepInfo, Undo

WAIT_KINDS = frozenset({"sleep", "wait_event", "receive"})
"""Step kinds that wait (for a timer, an event, a message) rather than work."""

COMPENSATION_PREFIX = "compensate:"
_MESSAGE_KINDS = frozenset({"wait_event", "receive"})


def human_duration(seconds: float) -> str:
    """``850 µs``, ``2.9 ms``, ``312 ms``, ``3.1 s``, ``2 min 5 s``, ``3 h 12 min``, ``2 d 4 h``."""
    seconds = max(seconds, 0.0)
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 0.1:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def wait_began(step: StepInfo, previous_end: datetime | None) -> datetime:
    """When a wait step began waiting.

    The stored ``started_at`` when it is before ``finished_at``; else the end of the step
    before it (``previous_end``: the workflow reaches its next step at once). Databases
    written before 2026-12-02 recorded a wait that ended as ``started_at == finished_at``
    (the moment it was answered), so the start is inferred for those rows.
    """
    if step.started_at < step.finished_at or previous_end is None:
        return step.started_at
    return min(previous_end, step.finished_at)


def step_seconds(step: StepInfo, previous_end: datetime | None) -> float:
    """A step's time in seconds: its work, or for a wait, from its start to its answer."""
    began = wait_began(step, previous_end) if step.kind in WAIT_KINDS else step.started_at
    return (step.finished_at - began).total_seconds()


def step_duration(step: StepInfo, previous_end: datetime | None) -> str:
    """``2.9 ms`` for a step's work, ``waited 3.1 s`` for a wait (see :func:`wait_began`)."""
    text = human_duration(step_seconds(step, previous_end))
    return f"waited {text}" if step.kind in WAIT_KINDS else text


def with_previous_end(
    steps: Iterable[StepInfo], first: datetime | None
) -> Iterator[tuple[StepInfo, datetime | None]]:
    """Each step with the end of the one before it (``first`` for the first step)."""
    previous = first
    for step in steps:
        yield step, previous
        previous = step.finished_at


def short(value: Any, width: int = 80) -> str:
    """Compact one-line JSON of ``value`` (a string as is), cut to ``width`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def error_summary(error: Any, *, first_line: bool = True) -> str:
    """``TerminalError: message`` from a stored error (class name without its module)."""
    if not error:
        return ""
    if not isinstance(error, dict):
        return str(error)
    kind = str(error.get("type", "error")).rpartition(".")[2]
    message = str(error.get("message", ""))
    if first_line:
        message = message.splitlines()[0] if message else ""
    return f"{kind}: {message}"


def step_outcome(step: StepInfo, width: int = 80) -> str:
    """What a step gave: its error, its output (for an event or a message, its data), or
    for a compensation what it undid."""
    if step.error:
        return short(error_summary(step.error), width)
    if step.kind == "compensation" and step.step_id.startswith(COMPENSATION_PREFIX):
        undid = f"undid {step.step_id.removeprefix(COMPENSATION_PREFIX)}"
        return short(undid if step.output is None else f"{undid} → {short(step.output)}", width)
    if step.kind in _MESSAGE_KINDS and isinstance(step.output, dict) and "data" in step.output:
        return short(step.output["data"], width)  # the message's envelope is in --json
    return "" if step.output is None else short(step.output, width)


def history_change(change: HistoryChange) -> str:
    """What a rewind, rollback or retry did, in one or two lines."""
    verb = {"rewind": "rewound", "rollback": "rolled back", "retry": "retried"}[change.operation]
    text = f"{verb} {change.instance_id}: kept {len(change.kept)} step(s), archived "
    text += f"{len(change.archived)}" + (
        f" (archived run {change.archived_run})" if change.archived_run else ""
    )
    if change.compensated:
        text += f"\ncompensated, in this order: {', '.join(change.compensated)}"
    return text


def rollback_plan(plan: list[Undo]) -> str:
    """The compensations a rollback would run."""
    if not plan:
        return "no compensation would run"
    return "would run, in this order:\n" + "\n".join(
        f"  {undo.compensation or '(not defined here: recorded as failed)'} for {undo.step_id}"
        for undo in plan
    )
