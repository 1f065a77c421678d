"""Workflows that ``tests/edges/test_cli_worker.py`` has ``romancy-nb worker`` serve.

Defined in the default registry, as a user's module is: ``--app tests.edges.worker_flows``
serves them on ``--db``; ``tests.edges.worker_app:app`` is an ``rn.App`` of them. The test
process imports them too, for its client app to start instances by their definitions.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import romancy_nb as rn
from tests.sql import append_row

SPANS = "runs"
"""The user table where each step records when it ran: (instance_id, step_id, began, ended)."""


@rn.activity(name="cli_worker_span")
def span(ctx: rn.ActivityContext, pause: float) -> float:
    """Record when this step ran, in its own transaction; ``pause`` in between, so that
    two instances running at once would overlap."""
    began = time.time()
    time.sleep(pause)
    ended = time.time()
    append_row(
        ctx.session,
        SPANS,
        "instance_id TEXT, step_id TEXT, began DOUBLE PRECISION, ended DOUBLE PRECISION",
        (ctx.instance_id, ctx.step_id, began, ended),
    )
    return ended


@rn.workflow(name="cli_worker_spans")
async def spans(ctx: rn.WorkflowContext, steps: int, pause: float) -> int:
    """``steps`` recorded steps; returns how many ran."""
    for _ in range(steps):
        await span(ctx, pause)
    return steps


@rn.activity(name="cli_worker_gate", transactional=False)
async def gate(ctx: rn.ActivityContext, folder: str) -> str:
    """A long-ish activity: notes each attempt (a line in ``attempts``), then runs until
    the test creates ``release``."""
    here = Path(folder)
    with (here / "attempts").open("a") as attempts:
        attempts.write(f"{ctx.step_id}\n")
    while not (here / "release").exists():
        await asyncio.sleep(0.02)
    return "released"


@rn.workflow(name="cli_worker_gated")
async def gated(ctx: rn.WorkflowContext, folder: str) -> str:
    return await gate(ctx, folder)
