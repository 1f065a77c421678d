"""Durable timers: ctx.sleep and ctx.sleep_until survive a restart of the process.

A reminder workflow sleeps, then sleeps until a given instant. Midway, the app is closed —
as if the process stopped — and a new one is opened on the same file: the instance was
waiting in the database (status ``waiting_for_timer``, no coroutine), and its timer fires in
the new process at the planned time, not later and not restarted.

    python examples/timer.py [--db PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import romancy_nb as rn


@rn.activity
async def remind(ctx: rn.ActivityContext, text: str) -> float:
    print(f"  reminder: {text}")
    return time.time()


@rn.workflow
async def reminders(ctx: rn.WorkflowContext, pause: float) -> list[float]:
    first = await remind(ctx, "stretch")
    await ctx.sleep(pause, timer_id="pause")
    second = await remind(ctx, "drink water")
    await ctx.sleep_until(ctx.now() + timedelta(seconds=pause))
    third = await remind(ctx, "go home")
    return [first, second, third]


async def main(db: Path) -> None:
    async with rn.App(db) as app:
        iid = await app.start(reminders, 0.5)
        while app.get_instance(iid).status != "waiting_for_timer":
            await asyncio.sleep(0.01)
        print(f"status {app.get_instance(iid).status}; closing the app (the 'process' stops)")
    async with rn.App(db) as app:
        print("reopened: the timer fires here")
        first, second, third = await app.result(iid)
        pause = next(s for s in app.get_history(iid) if s.step_id == "pause").output
        print(f"the pause fired {pause['fired_at'] - pause['fire_at']:.3f} s after its due time")
        print(f"gaps: {second - first:.2f} s, {third - second:.2f} s")
        steps = [s.step_id for s in app.get_history(iid)]
        print("history:", ", ".join(steps))
        assert datetime.now(UTC) > datetime.fromtimestamp(third, UTC)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path(tempfile.mkdtemp()) / "timer.db")
    asyncio.run(main(parser.parse_args().db))
