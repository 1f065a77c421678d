"""Channels: a broadcast to every listener, and jobs shared by competing workers.

Two auditors subscribe to ``news`` in broadcast mode: each receives every message. Three
workers subscribe to ``jobs`` in competing mode: each job is taken by exactly one of them.
A dispatcher workflow publishes the jobs, then the news; ``app.publish`` works from outside
any workflow too.

    python examples/channels.py [--db PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import romancy_nb as rn


@rn.activity
async def handle(ctx: rn.ActivityContext, worker: str, job: int) -> int:
    await asyncio.sleep(0.01)  # some work: meanwhile the other workers take jobs
    return job * job


@rn.workflow
async def auditor(ctx: rn.WorkflowContext, name: str, count: int) -> list[str]:
    await ctx.subscribe("news", mode="broadcast")
    return [(await ctx.receive("news")).data for _ in range(count)]


@rn.workflow
async def worker(ctx: rn.WorkflowContext, name: str) -> list[int]:
    await ctx.subscribe("jobs", mode="competing")
    done = []
    while True:
        msg = await ctx.receive("jobs")
        if msg.data is None:  # end of work
            return done
        await handle(ctx, name, msg.data)
        done.append(msg.data)


@rn.workflow
async def dispatcher(ctx: rn.WorkflowContext, jobs: int, workers: int) -> str:
    for job in range(jobs):
        await ctx.publish("jobs", job)
    for _ in range(workers):
        await ctx.publish("jobs", None)
    await ctx.publish("news", f"{jobs} jobs dispatched")
    return "dispatched"


async def main(db: Path) -> None:
    async with rn.App(db) as app:
        auditors = [await app.start(auditor, name, 2) for name in ("audit-a", "audit-b")]
        workers = [await app.start(worker, f"w{i}") for i in range(3)]
        for iid in auditors + workers:  # subscribed and waiting before anything is sent
            while app.get_instance(iid).status != "waiting_for_message":
                await asyncio.sleep(0.01)
        await app.result(await app.start(dispatcher, 12, len(workers)))
        await app.publish("news", "all done")
        taken = []
        for i, iid in enumerate(workers):
            jobs = await app.result(iid)
            taken += jobs
            print(f"worker w{i} took {jobs}")
        assert sorted(taken) == list(range(12)), taken
        print(f"each of the {len(taken)} jobs was taken exactly once")
        for iid in auditors:
            print(f"{iid[:8]} heard {await app.result(iid)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path(tempfile.mkdtemp()) / "channels.db")
    asyncio.run(main(parser.parse_args().db))
