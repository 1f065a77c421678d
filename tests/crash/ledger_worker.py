"""Worker process for tests/crash/test_sigkill_ledger.py.

Usage: python ledger_worker.py DB_URL [SLEEP_SECONDS]

Defines a workflow of 20 transactional activities, each inserting one row
(instance_id, step_id) into the user table ``ledger`` through ``ctx.session``, starts
(or, after a crash, re-attaches to) instances wf-0..wf-19, waits for all of them and exits 0.
An instance left behind by a killed worker is resumed by ``App.open`` (same host, dead pid).
"""

from __future__ import annotations

import asyncio
import sys
import time

import romancy_nb as rn
from tests.sql import execute

STEPS = 20
INSTANCES = 20

DB = sys.argv[1]
SLEEP = float(sys.argv[2]) if len(sys.argv) > 2 else 0.002


@rn.activity
def crash_ledger_step(ctx: rn.ActivityContext, n: int) -> int:
    time.sleep(SLEEP)  # busy outside the transaction...
    execute(
        ctx.session,
        "INSERT INTO ledger (instance_id, step_id) VALUES (?, ?)",
        (ctx.instance_id, ctx.step_id),
    )
    time.sleep(SLEEP)  # ...and inside it: a kill here leaves an uncommitted ledger row
    return n


@rn.workflow
async def crash_ledger_flow(ctx: rn.WorkflowContext, steps: int) -> int:
    total = 0
    for n in range(steps):
        total += await crash_ledger_step(ctx, n)
    return total


async def main() -> int:
    async with rn.App(DB) as app:
        ids = [
            await app.start(crash_ledger_flow, STEPS, instance_id=f"wf-{i}")
            for i in range(INSTANCES)
        ]
        for iid in ids:
            result = await app.result(iid)
            assert result == sum(range(STEPS)), (iid, result)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
