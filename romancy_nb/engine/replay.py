"""Step ids and the determinism check that replay relies on."""

from __future__ import annotations

import difflib
import json
from typing import Any, NamedTuple

from romancy_nb.errors import DeterminismViolation, RomancyError
from romancy_nb.store import StepRecord


class Asked(NamedTuple):
    """One step the workflow code asked for during a replay-only run, and what history
    answered: the recorded step (None: history does not hold it) and, if they differ, the
    :class:`DeterminismViolation` with its diff."""

    step_id: str
    kind: str
    name: str
    input: str | None
    recorded: StepRecord | None = None
    violation: DeterminismViolation | None = None


class StepIds:
    """Hands out ``name:N`` step ids in call order; an explicit id may be given once."""

    __slots__ = ("_counters", "_used")

    def __init__(self) -> None:
        self._counters: dict[str, int] = {}
        self._used: set[str] = set()

    def take(self, name: str, explicit: str | None, instance_id: str) -> str:
        if explicit is None:
            number = self._counters.get(name, 0) + 1
            self._counters[name] = number
            step_id = f"{name}:{number}"
        else:
            step_id = explicit
        if step_id in self._used:
            raise RomancyError(
                f"step id {step_id!r} is used twice in workflow instance {instance_id!r}; "
                "give each call a distinct activity_id=",
                step_id=step_id,
                instance_id=instance_id,
            )
        self._used.add(step_id)
        return step_id


def _describe(kind: str, name: str, input_json: str | None) -> dict[str, Any]:
    return {
        "kind": kind,
        "name": name,
        "input": json.loads(input_json) if input_json is not None else None,
    }


def violation(
    instance_id: str, recorded: StepRecord, kind: str, name: str, input_json: str | None
) -> DeterminismViolation:
    """The error for a step whose kind, name or input differs from the recorded one."""
    expected = _describe(recorded.kind, recorded.name, recorded.input)
    actual = _describe(kind, name, input_json)
    diff = "\n".join(
        difflib.unified_diff(
            json.dumps(expected, indent=2, sort_keys=True, default=str).splitlines(),
            json.dumps(actual, indent=2, sort_keys=True, default=str).splitlines(),
            fromfile=f"history {recorded.step_id}",
            tofile=f"code    {recorded.step_id}",
            lineterm="",
        )
    )
    return DeterminismViolation(instance_id, recorded.step_id, expected, actual, diff)
