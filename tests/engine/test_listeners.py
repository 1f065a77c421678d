"""``App.add_listener``: a callback per recorded step, and per run start/end."""

from __future__ import annotations

import pytest

import romancy_nb as rn
from romancy_nb.store import StepRecord


@rn.activity
def listened_sync(ctx: rn.ActivityContext, x: int) -> int:
    ctx.session.execute("SELECT 1")  # a transactional sync step: recorded on its thread
    return x + 1


@rn.activity
async def listened_async(ctx: rn.ActivityContext, x: int) -> int:
    return x * 10


@rn.workflow
async def listened_flow(ctx: rn.WorkflowContext, x: int) -> int:
    return await listened_async(ctx, await listened_sync(ctx, x))


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_listeners_see_every_step_and_each_run_start_and_end(
    store_url: str, synchronous: str
) -> None:
    seen: list[tuple[str, str | None]] = []

    def listener(instance_id: str, step: StepRecord | None) -> None:
        seen.append((instance_id, step.step_id if step is not None else None))

    def broken(instance_id: str, step: StepRecord | None) -> None:
        raise RuntimeError("a broken listener must not break the workflow")

    async with rn.App(store_url, synchronous=synchronous) as app:
        app.add_listener(broken)
        app.add_listener(listener)
        assert await app.result(await app.start(listened_flow, 1, instance_id="l-1")) == 20
        assert seen == [
            ("l-1", None),
            ("l-1", "listened_sync:1"),
            ("l-1", "listened_async:1"),
            ("l-1", None),
        ]
        app.remove_listener(listener)
        app.remove_listener(listener)  # removing twice is harmless
        await app.result(await app.start(listened_flow, 2))
        assert len(seen) == 4
