"""A compensation whose recorded arguments no longer fit its activity is recorded as failed.

The activity's signature can change while an instance waits (a notebook cell edited). The
compensation then cannot get its arguments back; it must say so in history — a failed
``compensate:`` step — never be skipped silently as if nothing needed undoing.
"""

from __future__ import annotations

import json

import romancy_nb as rn
from romancy_nb.engine.registry import registry
from romancy_nb.testing import eventually

undone: list[str] = []


@rn.activity(name="cd_reserve")
async def reserve_v1(ctx: rn.ActivityContext, item: str) -> str:
    return f"reserved {item}"


@reserve_v1.compensation
async def release_v1(ctx: rn.ActivityContext, item: str) -> None:
    undone.append(item)


@rn.workflow
async def cd_flow(ctx: rn.WorkflowContext, item: str) -> str:
    await reserve_v1(ctx, item)
    await ctx.wait_event("cd.go")
    return "done"


async def test_a_compensation_whose_arguments_no_longer_decode_is_recorded_as_failed(
    app: rn.App,
) -> None:
    undone.clear()
    iid = await app.start(cd_flow, "pen")
    await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")

    # The cell is edited while the instance waits: the parameter is now a number.
    @rn.activity(name="cd_reserve")
    async def reserve_v2(ctx: rn.ActivityContext, item: int) -> str:
        return f"reserved {item}"

    @reserve_v2.compensation
    async def release_v2(ctx: rn.ActivityContext, item: int) -> None:
        undone.append(str(item))

    try:
        assert await app.cancel(iid, "changed my mind") == "cancelled"
        steps = {step.step_id: step for step in app.get_history(iid)}
        failed = steps["compensate:cd_reserve:1"]
        assert failed.status == "failed"
        recorded = {step.step_id: step for step in app.store.load_history(iid)}
        error = json.loads(recorded["compensate:cd_reserve:1"].error or "{}")
        assert "no longer fit" in error["message"]
        assert undone == []  # nothing ran with arguments it could not have
    finally:
        registry.add_activity(reserve_v1)  # leave the registry as it was
