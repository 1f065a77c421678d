"""A worker process for tests/engine/test_time_travel_refusals.py (run as a script).

    python travel_worker.py '{"db": URL, "mode": "hold" | "rewind", "instance": ID,
                              "dir": FOLDER}'

``ttr_flow`` runs a step, then ``ttr_gate`` — which, while the file ``FOLDER/block`` exists,
creates ``FOLDER/entered-<pid>`` and waits for ``block`` to go — then waits for an event.

``hold`` starts the instance, prints ``ready <worker id>`` and serves until it has ended.
``rewind`` opens the app, prints ``ready <worker id>``, waits for the file ``FOLDER/go``
(the starting gun shared by two such workers), rewinds the instance to ``ttr_step:1`` and
prints one JSON line saying how that went; if it won, it serves until the instance waits
for its event again (after ``block`` is gone), so its run keeps the lease meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import romancy_nb as rn
from romancy_nb.testing import eventually


@rn.activity(transactional=False)
def ttr_step(ctx: rn.ActivityContext, note: str) -> str:
    return note


@ttr_step.compensation
def ttr_undo(ctx: rn.ActivityContext, note: str) -> None:
    """Undoes nothing: it only makes the step compensable."""


@rn.activity(transactional=False)
def ttr_gate(ctx: rn.ActivityContext, folder: str) -> str:
    block = Path(folder) / "block"
    if block.exists():
        (Path(folder) / f"entered-{os.getpid()}").touch()
        while block.exists():
            time.sleep(0.005)
    return "passed"


@rn.workflow
async def ttr_flow(ctx: rn.WorkflowContext, folder: str) -> list[str]:
    out = [await ttr_step(ctx, "a"), await ttr_gate(ctx, folder)]
    event = await ctx.wait_event("ttr.go")
    out.append(event.data)
    return out


async def _rewind(app: rn.App, instance_id: str, folder: Path) -> None:
    while not (folder / "go").exists():
        await asyncio.sleep(0.0005)
    try:
        change = await app.rewind(instance_id, to="ttr_step:1")
    except rn.RomancyError as error:
        print(json.dumps({"error": type(error).__name__, "message": str(error)}), flush=True)
        return
    print(json.dumps({"won": True, "archived_run": change.archived_run}), flush=True)
    await eventually(
        lambda: app.get_instance(instance_id).status == "waiting_for_event", timeout=60
    )


async def main(plan: dict) -> None:
    folder = Path(plan["dir"])
    instance_id = plan["instance"]
    async with rn.App(plan["db"]) as app:
        if plan["mode"] == "hold":
            await app.start(ttr_flow, str(folder), instance_id=instance_id)
            print(f"ready {app.worker_id}", flush=True)
            await app.result(instance_id, timeout=60)
        else:
            print(f"ready {app.worker_id}", flush=True)
            await _rewind(app, instance_id, folder)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
