"""A wait's step spans the wait: recorded from when it was registered to when it ended."""

from __future__ import annotations

import time

import romancy_nb as rn
from romancy_nb.testing import eventually


@rn.workflow
async def wt_waiter(ctx: rn.WorkflowContext) -> None:
    await ctx.wait_event("wt-go")


async def test_an_answered_wait_starts_when_it_was_registered(app: rn.App) -> None:
    iid = await app.start(wt_waiter)
    await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
    (wait,) = app.store.load_waits(iid)
    registered = app.store.read_table("waits", {"instance_id": iid})
    assert registered is not None
    created_at = registered.rows[0][registered.columns.index("created_at")]
    await eventually(lambda: time.time() > created_at + 0.05)
    await app.send_event("wt-go")
    await app.result(iid)
    (step,) = app.store.load_history(iid)
    assert step.step_id == wait.step_id
    assert step.started_at == created_at
    assert step.finished_at - step.started_at >= 0.05
