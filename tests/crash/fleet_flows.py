"""The workflows of the multi-process tests on one PostgreSQL database (``test_fleet_*``).

Imported by the workers (through ``fleet_worker.py``, which ``romancy-nb worker --app``
serves) and by the test process, whose client app starts instances by these definitions.
They live in a registry of their own, so importing them changes nothing for other tests.

Every side effect a test counts goes through a transactional activity into the user table
``ledger`` (:data:`LEDGER_COLUMNS`, no UNIQUE constraint: a step committed twice shows up
as two rows), written through ``ctx.session`` in the step's own transaction.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import romancy_nb as rn
from tests.sql import execute

registry = rn.Registry()

LEDGER_COLUMNS = "instance_id TEXT NOT NULL, step_id TEXT NOT NULL, value BIGINT NOT NULL"


@rn.activity(registry=registry, name="fleet_ledger_step")
def ledger_step(ctx: rn.ActivityContext, value: int, pause: float) -> int:
    """One ledger row for this step; ``pause`` before and inside the transaction, so that
    a SIGKILL lands in both (one inside leaves an uncommitted row behind)."""
    time.sleep(pause)
    execute(
        ctx.session,
        "INSERT INTO ledger (instance_id, step_id, value) VALUES (?, ?, ?)",
        (ctx.instance_id, ctx.step_id, value),
    )
    time.sleep(pause)
    return value


@rn.workflow(registry=registry, name="fleet_ledger_flow")
async def ledger_flow(ctx: rn.WorkflowContext, steps: int, pause: float) -> int:
    """``steps`` ledger steps in a row; returns the sum of their values (0..steps-1)."""
    total = 0
    for n in range(steps):
        total += await ledger_step(ctx, n, pause)
    return total


@rn.workflow(registry=registry, name="fleet_consumer")
async def consumer(ctx: rn.WorkflowContext, channel: str) -> list[int]:
    """A competing consumer: each message it takes is written to the ledger, until a
    ``"stop"`` message; returns the messages it took."""
    await ctx.subscribe(channel, mode="competing")
    taken: list[int] = []
    while True:
        message = await ctx.receive(channel)
        if message.data == "stop":
            return taken
        taken.append(await ledger_step(ctx, message.data, 0.0))


@rn.activity(registry=registry, name="fleet_hold", transactional=False)
async def hold(ctx: rn.ActivityContext, path: str) -> None:
    """Keep the worker busy until the test creates the file ``path``."""
    while not Path(path).exists():
        await asyncio.sleep(0.02)


@rn.workflow(registry=registry, name="fleet_holder")
async def holder(ctx: rn.WorkflowContext, path: str) -> str:
    """Occupies one of a worker's ``--max-concurrent`` slots until ``path`` exists."""
    await hold(ctx, path)
    return "released"


@rn.workflow(registry=registry, name="fleet_sleeper")
async def sleeper(ctx: rn.WorkflowContext, seconds: float) -> str:
    """Sleeps durably (unloaded, no lease: only a timer wakes it), then one ledger row."""
    await ctx.sleep(seconds)
    await ledger_step(ctx, 1, 0.0)
    return "woke"
