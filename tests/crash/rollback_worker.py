"""Worker process for tests/crash/test_rollback_sigkill.py.

Usage: python rollback_worker.py DB_URL MODE [SLEEP_SECONDS]

``rb_flow`` runs six transactional steps; each writes a ``do`` row into the user table
``ledger`` through ``ctx.session`` and its compensation writes an ``undo`` row the same way,
so every committed side effect of a step or an undo is one row, in commit order.
Compensations are slow (``SLEEP`` outside their transaction and again inside it) so that a
SIGKILL can land between two of them, or in the middle of one; steps take ``SLEEP / 2`` in
their transaction, so a kill soon after the last undo lands in the re-run.

MODE ``start`` runs instance ``rb-1`` to completion; ``rollback`` rolls the completed
instance back to ``rb_step:2`` (compensating steps 6..3, then running them again);
``resume`` only opens the app — its recovery picks up a rollback a killed worker left
``rolling_back`` — and waits until ``rb-1`` has ended. Each mode exits 0 once ``rb-1`` is
completed.
"""

from __future__ import annotations

import asyncio
import sys
import time

import romancy_nb as rn
from tests.sql import execute

INSTANCE = "rb-1"
STEPS = 6
TO = "rb_step:2"

DB = sys.argv[1]
MODE = sys.argv[2]
SLEEP = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1


def _write(ctx: rn.ActivityContext, kind: str, n: int) -> None:
    execute(
        ctx.session,
        "INSERT INTO ledger (kind, instance_id, step_id, n) VALUES (?, ?, ?, ?)",
        (kind, ctx.instance_id, ctx.step_id, n),
    )


@rn.activity
def rb_step(ctx: rn.ActivityContext, n: int) -> int:
    _write(ctx, "do", n)
    time.sleep(SLEEP / 2)  # in the transaction: a kill after the last undo lands in the re-run
    return n


@rb_step.compensation
def rb_undo(ctx: rn.ActivityContext, n: int) -> None:
    time.sleep(SLEEP)  # busy outside the transaction...
    _write(ctx, "undo", n)
    time.sleep(SLEEP)  # ...and inside it: a kill here leaves an uncommitted undo row


@rn.workflow
async def rb_flow(ctx: rn.WorkflowContext, steps: int) -> list[int]:
    return [await rb_step(ctx, n) for n in range(1, steps + 1)]


async def main() -> int:
    async with rn.App(DB) as app:
        if MODE == "start":
            await app.start(rb_flow, STEPS, instance_id=INSTANCE)
        elif MODE == "rollback":
            print("rolling back", flush=True)
            await app.rollback(INSTANCE, to=TO)
        elif MODE != "resume":
            raise SystemExit(f"unknown mode {MODE!r}")
        result = await app.result(INSTANCE, timeout=120)
        assert result == list(range(1, STEPS + 1)), result
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
