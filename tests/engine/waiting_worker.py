"""A worker process for the cross-process waiting tests (run as a script).

    python waiting_worker.py '{"db": URL, "start": [[WORKFLOW, ID, ARGS], ...],
                               "await": [ID, ...], "sweep_interval": 30}'

Starts the given instances, prints ``ready``, and serves (runs and wakes instances) until
every awaited instance has ended. The sweep interval is long on purpose: a wake-up that
arrives well before it came from the change watcher, not from the sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys

import romancy_nb as rn
from romancy_nb.testing import eventually


@rn.workflow
async def xp_wait_event(ctx: rn.WorkflowContext) -> dict:
    ev = await ctx.wait_event("xp.go")
    return {"data": ev.data, "pid": os.getpid()}


@rn.workflow
async def xp_sleep(ctx: rn.WorkflowContext, seconds: float) -> dict:
    await ctx.sleep(seconds)
    return {"pid": os.getpid()}


@rn.workflow
async def xp_consumer(ctx: rn.WorkflowContext, channel: str) -> list[int]:
    await ctx.subscribe(channel, mode="competing")
    got: list[int] = []
    while True:
        msg = await ctx.receive(channel)
        if msg.data == "stop":
            return got
        got.append(msg.data)


async def main(plan: dict) -> None:
    async with rn.App(plan["db"], sweep_interval=plan.get("sweep_interval", 30)) as app:
        for name, iid, args in plan.get("start", []):
            await app.start(name, *args, instance_id=iid)
        print("ready", flush=True)
        for iid in plan.get("await", []):
            # another process may create it later
            await eventually(lambda iid=iid: app.store.get_instance(iid), timeout=60)
            with contextlib.suppress(rn.RomancyError):  # failed: the test says so
                await app.result(iid, timeout=plan.get("timeout", 60))


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
