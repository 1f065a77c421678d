"""Two runs side by side, step by step (``app.compare`` / ``rn.compare``).

Steps are paired by step id — ids are deterministic (``name:N`` in call order), so the same
step of two instances of one workflow has the same id, whatever their timing — and listed in
the first run's recording order, with steps only the second run has placed after the
step that precedes them there. A typical use: an original and its fork, or a run before and
after a rewind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from romancy_nb.engine.cuts import UNWINDING_KINDS
from romancy_nb.engine.info import decode_json
from romancy_nb.store.protocol import StepRecord


@dataclass(frozen=True)
class StepSide:
    """One run's version of a step."""

    status: str
    input: Any
    output: Any
    error: Any

    @property
    def result(self) -> Any:
        """The output, or the error of a failed step."""
        return self.error if self.status == "failed" else self.output

    @classmethod
    def of(cls, step: StepRecord) -> StepSide:
        return cls(
            step.status, decode_json(step.input), decode_json(step.output), decode_json(step.error)
        )


@dataclass(frozen=True)
class StepPair:
    """A step of both runs (or of one: the other side is None), and what differs."""

    step_id: str
    kind: str
    name: str
    a: StepSide | None
    b: StepSide | None

    @property
    def differences(self) -> list[str]:
        """What differs: ``only a`` / ``only b``, or any of ``status``, ``input``,
        ``output``, ``error``; empty when the step is the same in both runs."""
        if self.a is None:
            return ["only b"]
        if self.b is None:
            return ["only a"]
        return [name for name in ("status", "input", "output", "error")
                if getattr(self.a, name) != getattr(self.b, name)]  # fmt: skip

    @property
    def same(self) -> bool:
        return not self.differences


@dataclass(frozen=True)
class Comparison:
    """Two instances' histories paired step by step (see the module docstring)."""

    a: str
    b: str
    a_status: str
    b_status: str
    steps: list[StepPair] = field(default_factory=list)

    @property
    def first_difference(self) -> str | None:
        """The id of the first step that differs, or None if the histories agree."""
        return next((pair.step_id for pair in self.steps if not pair.same), None)

    def records(self) -> list[dict[str, Any]]:
        """One flat dict per step (the columns of a DataFrame): each side's status, input
        and output, and what differs."""
        rows = []
        for pair in self.steps:
            row: dict[str, Any] = {"step_id": pair.step_id, "kind": pair.kind, "name": pair.name}
            for label, side in (("a", pair.a), ("b", pair.b)):
                row[f"{label}_status"] = side.status if side else None
                row[f"{label}_input"] = side.input if side else None
                row[f"{label}_output"] = side.result if side else None
            row["differs"] = ", ".join(pair.differences)
            rows.append(row)
        return rows


def pair_steps(a: list[StepRecord], b: list[StepRecord]) -> list[StepPair]:
    """Pair two histories by step id, in ``a``'s order with ``b``-only steps slotted in."""
    a_steps = [s for s in sorted(a, key=lambda s: s.seq) if s.kind not in UNWINDING_KINDS]
    b_steps = [s for s in sorted(b, key=lambda s: s.seq) if s.kind not in UNWINDING_KINDS]
    by_id_b = {s.step_id: s for s in b_steps}
    order = [s.step_id for s in a_steps]
    known = set(order)
    previous: str | None = None
    for step in b_steps:
        if step.step_id not in known:
            at = order.index(previous) + 1 if previous is not None else 0
            order.insert(at, step.step_id)
            known.add(step.step_id)
        previous = step.step_id
    by_id_a = {s.step_id: s for s in a_steps}
    pairs = []
    for step_id in order:
        left, right = by_id_a.get(step_id), by_id_b.get(step_id)
        shown = left or right
        assert shown is not None
        pairs.append(
            StepPair(
                step_id,
                shown.kind,
                shown.name,
                StepSide.of(left) if left else None,
                StepSide.of(right) if right else None,
            )
        )
    return pairs


__all__ = ["Comparison", "StepPair", "StepSide", "pair_steps"]
