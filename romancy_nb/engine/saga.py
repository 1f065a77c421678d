"""Saga compensation: undo completed steps in reverse order, durably.

Each compensation is recorded as a step ``compensate:<step id>``, so a crash in the middle
of unwinding resumes with the compensations that have not run yet, never repeating one that
has. A compensation that fails for good is recorded as failed and the unwinding goes on: one
stuck undo must not leave every other reservation held.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from romancy_nb.engine import logs
from romancy_nb.errors import RomancyError
from romancy_nb.store import StepRecord

if TYPE_CHECKING:
    from romancy_nb.engine.definitions import Activity
    from romancy_nb.engine.registry import Registry
    from romancy_nb.engine.runner import WorkflowRun

log = logging.getLogger("romancy_nb")

_PREFIX = "compensate:"


def step_id_for(step: StepRecord) -> str:
    return _PREFIX + step.step_id


def pending(
    history: list[StepRecord], registry: Registry
) -> list[tuple[StepRecord, Activity[Any, Any] | None]]:
    """Completed steps still to compensate, newest first, with their activity definitions.

    A step whose activity is not defined in this process is listed with ``None``: we cannot
    know whether it had a compensation, and skipping it silently could leave a side effect
    un-done, so it is recorded as a failed compensation instead.
    """
    done = {step.step_id[len(_PREFIX) :] for step in history if step.kind == "compensation"}
    out: list[tuple[StepRecord, Activity[Any, Any] | None]] = []
    for step in sorted(history, key=lambda s: s.seq, reverse=True):
        if step.kind != "activity" or step.status != "completed" or step.step_id in done:
            continue
        activity = registry.find_activity(step.name)
        if activity is None or activity.compensator is not None:
            out.append((step, activity))
    return out


async def compensate(
    run: WorkflowRun, steps: list[tuple[StepRecord, Activity[Any, Any] | None]]
) -> list[str]:
    """Run each pending compensation; record failures and keep going.

    Returns the ids of the steps whose compensation failed (empty when every undo ran).
    """
    failed: list[str] = []
    for step, activity in steps:
        if activity is None:
            error = RomancyError(
                f"cannot compensate step {step.step_id}: activity {step.name!r} is not "
                "defined in this process"
            )
            await run.record_compensation_failure(step, error)
            failed.append(step.step_id)
            continue
        try:
            await run.compensate_step(step, activity)
        except Exception as error:  # recorded as a failed step by the runner
            log.error(
                "%s: compensation of %s failed: %s", run.instance_id, step.step_id, error,
                extra=logs.fields(run.instance_id, run.workflow_name, step.step_id),
            )  # fmt: skip
            failed.append(step.step_id)
    return failed
