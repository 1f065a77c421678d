"""romancy_nb waiting workloads: timers, events, channels, and idle instances' memory.

Figures (all latencies in milliseconds, measured on wall or perf clocks in the workflow
code itself, right after the wait returns in the resumed run):

- ``sleep_late_ms_p50`` / ``_max``: ``ctx.sleep(1)`` resume lateness, N instances at once.
- ``event_resume_ms_p50`` / ``_p90``: ``app.send_event`` → the waiting workflow runs again,
  same process (the instance was unloaded: status waiting_for_event, no coroutine).
- ``xproc_event_resume_ms_p50`` / ``_p90``: the same, the event sent from this process to a
  workflow waiting in a worker subprocess on the same database file (change watcher).
- ``competing_msgs_per_s``: messages published from outside and consumed by 4 competing
  consumer instances (receive + a recorded step each), end to end.
- ``waiting_mem_bytes_per_instance``: RSS growth per instance while N instances wait for an
  event (no coroutine, no task: only rows in the database), ``waiting_instances`` = N.

    python bench/workloads/romancy_waiting.py --db-dir /tmp/x [--quick] [--synchronous FULL]
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from common import current_rss, emit, parse_args

import romancy_nb as rn

SLEEP_BEFORE: dict[str, float] = {}
SLEEP_AFTER: dict[str, float] = {}
RESUMED: dict[str, float] = {}


@rn.workflow
async def bw_sleeper(ctx: rn.WorkflowContext, seconds: float) -> None:
    if not ctx.is_replaying:
        SLEEP_BEFORE[ctx.instance_id] = time.time()
    await ctx.sleep(seconds)
    SLEEP_AFTER[ctx.instance_id] = time.time()


@rn.workflow
async def bw_event_once(ctx: rn.WorkflowContext, event_type: str) -> float:
    await ctx.wait_event(event_type)
    resumed = time.time()
    RESUMED[ctx.instance_id] = time.perf_counter()
    return resumed


@rn.activity
async def bw_handle(ctx: rn.ActivityContext, n: int) -> int:
    return n


@rn.workflow
async def bw_consumer(ctx: rn.WorkflowContext, channel: str, taken: int) -> int:
    await ctx.subscribe(channel, mode="competing")
    for _ in range(200):  # then recur: history and replay stay short
        msg = await ctx.receive(channel)
        if msg.data is None:
            return taken
        await bw_handle(ctx, msg.data)
        taken += 1
    ctx.recur(channel, taken)


@rn.workflow
async def bw_idle(ctx: rn.WorkflowContext) -> None:
    await ctx.wait_event("bench.never")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def wait_for(probe: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        await asyncio.sleep(0.001)


def status_count(app: rn.App, status: str) -> int:
    rows = app.store.connection.execute(  # type: ignore[attr-defined]
        "SELECT count(*) FROM workflow_instances WHERE status = ?", (status,)
    ).fetchall()
    return rows[0][0]


async def measure_sleep(app: rn.App, n: int) -> dict[str, float]:
    ids = [await app.start(bw_sleeper, 1.0) for _ in range(n)]
    for iid in ids:
        await app.result(iid, timeout=60)
    late = [(SLEEP_AFTER[i] - SLEEP_BEFORE[i] - 1.0) * 1000 for i in ids]
    return {"sleep_late_ms_p50": statistics.median(late), "sleep_late_ms_max": max(late)}


async def measure_event(app: rn.App, n: int) -> dict[str, float]:
    latencies = []
    for i in range(n):
        iid = await app.start(bw_event_once, f"bench.ev.{i}")
        await wait_for(lambda iid=iid: iid not in app._runs)
        assert app.get_instance(iid).status == "waiting_for_event"
        t0 = time.perf_counter()
        await app.send_event(f"bench.ev.{i}", i)
        await wait_for(lambda iid=iid: iid in RESUMED)
        latencies.append((RESUMED[iid] - t0) * 1000)
    return {
        "event_resume_ms_p50": statistics.median(latencies),
        "event_resume_ms_p90": pct(latencies, 0.9),
    }


async def measure_cross_process(db: str, n: int) -> dict[str, float]:
    """A worker subprocess runs the waiting instances; this process only sends events."""
    plan = {"db": db, "n": n}
    worker = subprocess.Popen(
        [sys.executable, __file__, "--serve", json.dumps(plan), "--db-dir", str(Path(db).parent)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        latencies = await _send_cross(db, n)
    finally:
        worker.wait(timeout=60)
    return {
        "xproc_event_resume_ms_p50": statistics.median(latencies),
        "xproc_event_resume_ms_p90": pct(latencies, 0.9),
    }


async def _send_cross(db: str, n: int) -> list[float]:
    latencies = []
    async with rn.App(db, registry=rn.Registry()) as app:  # defines no workflow: only sends
        for i in range(n):
            iid = f"xp-{i}"
            await wait_for(lambda iid=iid: _status(app, iid) == "waiting_for_event")
            await asyncio.sleep(0.05)  # let the worker go idle: no lucky in-flight poll
            t0 = time.time()
            await app.send_event(f"bench.xp.{i}", i)
            resumed = await app.result(iid, timeout=30)
            latencies.append((resumed - t0) * 1000)
    return latencies


def _status(app: rn.App, iid: str) -> str | None:
    record = app.store.get_instance(iid)
    return record.status if record else None


async def serve(plan: dict[str, Any]) -> None:
    async with rn.App(plan["db"], sweep_interval=60) as app:
        for i in range(plan["n"]):
            await app.start(bw_event_once, f"bench.xp.{i}", instance_id=f"xp-{i}")
        print("ready", flush=True)
        for i in range(plan["n"]):
            await app.result(f"xp-{i}", timeout=120)


async def measure_competing(app: rn.App, messages: int, consumers: int = 4) -> dict[str, float]:
    ids = [await app.start(bw_consumer, "bench.jobs", 0) for _ in range(consumers)]
    await wait_for(lambda: all(_status(app, i) == "waiting_for_message" for i in ids))
    t0 = time.perf_counter()
    for n in range(messages):
        await app.publish("bench.jobs", n)
        if n % 50 == 0:
            await asyncio.sleep(0)  # consumers take while the producer publishes
    for _ in ids:
        await app.publish("bench.jobs", None)
    total = sum([await app.result(i, timeout=600) for i in ids])
    elapsed = time.perf_counter() - t0
    assert total == messages, (total, messages)
    return {"competing_msgs_per_s": messages / elapsed, "competing_messages": messages}


async def measure_memory(app: rn.App, n: int) -> dict[str, float]:
    batch = 1000
    gc.collect()
    base_rss = current_rss()
    sampled: dict[int, int] = {}
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        for _ in range(min(batch, n - start)):
            await app.start(bw_idle)
        await wait_for(lambda: not app._runs, timeout=600)
        if start + batch in (n // 10, n):
            gc.collect()
            sampled[start + batch] = current_rss()
    elapsed = time.perf_counter() - t0
    waiting = status_count(app, "waiting_for_event")
    assert waiting == n, (waiting, n)
    tenth = n // 10
    per_instance = (sampled[n] - sampled[tenth]) / (n - tenth)
    return {
        "waiting_instances": n,
        "waiting_mem_bytes_per_instance": per_instance,
        "waiting_rss_delta_mb": (sampled[n] - base_rss) / 2**20,
        "waiting_tasks": len(asyncio.all_tasks()),
        "suspend_per_s": n / elapsed,
    }


async def run_all(args: Any) -> tuple[dict[str, float], dict[str, Any]]:
    quick = args.quick
    db = str((args.db_dir / f"romancy_waiting_{args.synchronous.lower()}.db").resolve())
    fig: dict[str, float] = {}
    async with rn.App(db, synchronous=args.synchronous) as app:
        fig.update(await measure_sleep(app, 5 if quick else 20))
        fig.update(await measure_event(app, 20 if quick else 100))
        fig.update(await measure_competing(app, 500 if quick else 5000))
    fig.update(await measure_cross_process(db, 10 if quick else 30))
    mem_db = str((args.db_dir / f"romancy_mem_{args.synchronous.lower()}.db").resolve())
    async with rn.App(mem_db, synchronous=args.synchronous) as app:
        fig.update(await measure_memory(app, 10_000 if quick else 100_000))
    return fig, {"synchronous": args.synchronous}


def main() -> None:
    if "--serve" in sys.argv:
        asyncio.run(serve(json.loads(sys.argv[sys.argv.index("--serve") + 1])))
        return
    args = parse_args({"--synchronous": {"choices": ["NORMAL", "FULL"], "default": "NORMAL"}})
    fig, info = asyncio.run(run_all(args))
    emit(
        f"romancy_nb-{args.synchronous}-waiting",
        version("romancy-nb"),
        fig,
        quick=args.quick,
        **info,
    )


if __name__ == "__main__":
    main()
