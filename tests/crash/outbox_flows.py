"""The workflow of tests/crash/test_outbox_crash.py: steps that each send a numbered event
through the outbox (``ctx.send_event``), served by ``tests.crash.outbox_worker:app``."""

from __future__ import annotations

import asyncio

import romancy_nb as rn

EVENT_TYPE = "crash.numbered"


@rn.activity(name="outbox_crash_send", transactional=False)
async def send_numbered(ctx: rn.ActivityContext, n: int, pause: float) -> str:
    await asyncio.sleep(pause)  # a kill can land in the step, before its event is written
    return ctx.send_event(EVENT_TYPE, {"instance": ctx.instance_id, "n": n})


@rn.workflow(name="outbox_crash_flow")
async def numbering(ctx: rn.WorkflowContext, steps: int, pause: float) -> int:
    """``steps`` steps; step n sends event n (n = 0, 1, ...)."""
    for n in range(steps):
        await send_numbered(ctx, n, pause)
    return steps
