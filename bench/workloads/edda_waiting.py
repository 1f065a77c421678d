"""Edda waiting workloads (edda-framework==0.16.2, SQLite), peers of romancy_waiting.py.

Edda's own idiom: ``sleep(ctx, seconds)``, ``wait_event(ctx, type)`` (a broadcast channel
named by the type), events delivered with ``app.handle_cloudevent`` as its HTTP endpoint
does, channels with ``subscribe`` / ``receive`` / ``publish``. A waiting Edda instance holds
no coroutine either (it is replayed), but wake-ups are polled: expired timers every 10 s,
delivered-but-not-resumed instances every 1 s.

- ``sleep_late_ms_*``: ``sleep(ctx, 1)`` resume lateness, N instances at once.
- ``event_resume_ms_*``: ``handle_cloudevent`` → the waiting workflow runs again, same
  process.
- ``xproc_event_resume_ms_*``: the event delivered from this process (storage only, no
  workflows here) to a workflow served by an Edda subprocess on the same SQLite file.
- ``competing_msgs_per_s``: messages published from outside, taken by 4 competing consumers.
- ``waiting_mem_bytes_per_instance``: RSS growth per instance waiting for an event.

    bench/.venvs/edda/bin/python bench/workloads/edda_waiting.py --db-dir /tmp/x [--quick]
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

from cloudevents.http import CloudEvent
from common import current_rss, emit, parse_args
from edda import (
    EddaApp,
    WorkflowContext,
    activity,
    publish,
    receive,
    sleep,
    subscribe,
    wait_event,
    workflow,
)

SLEEP_BEFORE: dict[str, float] = {}
SLEEP_AFTER: dict[str, float] = {}
RESUMED: dict[str, float] = {}


@workflow
async def ew_sleeper(ctx: WorkflowContext, seconds: int) -> None:
    if not ctx.is_replaying:
        SLEEP_BEFORE[ctx.instance_id] = time.time()
    await sleep(ctx, seconds)
    SLEEP_AFTER[ctx.instance_id] = time.time()


@workflow
async def ew_event_once(ctx: WorkflowContext, event_type: str) -> float:
    await wait_event(ctx, event_type)
    RESUMED[ctx.instance_id] = time.perf_counter()
    return time.time()


@activity
async def ew_handle(ctx: WorkflowContext, n: int) -> int:
    return n


@workflow
async def ew_consumer(ctx: WorkflowContext, count: int) -> int:
    await subscribe(ctx, "jobs", mode="competing")
    for i in range(count):
        msg = await receive(ctx, "jobs")
        await ew_handle(ctx, msg.data["n"], activity_id=f"handle:{i}")
    return count


@workflow
async def ew_idle(ctx: WorkflowContext) -> None:
    await wait_event(ctx, "bench.never")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def event(event_type: str, data: dict[str, Any]) -> CloudEvent:
    return CloudEvent({"type": event_type, "source": "bench", "id": str(uuid.uuid4())}, data)


async def status(app: EddaApp, iid: str) -> str | None:
    inst = await app.storage.get_instance(iid)
    return inst["status"] if inst else None


async def wait_status(app: EddaApp, iid: str, wanted: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while await status(app, iid) != wanted:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{iid} never reached {wanted}")
        await asyncio.sleep(0.005)


async def measure_sleep(app: EddaApp, n: int) -> dict[str, float]:
    ids = [await ew_sleeper.start(seconds=1) for _ in range(n)]
    for iid in ids:
        await wait_status(app, iid, "completed")
    late = [(SLEEP_AFTER[i] - SLEEP_BEFORE[i] - 1.0) * 1000 for i in ids]
    return {"sleep_late_ms_p50": statistics.median(late), "sleep_late_ms_max": max(late)}


async def measure_event(app: EddaApp, n: int) -> dict[str, float]:
    latencies = []
    for i in range(n):
        iid = await ew_event_once.start(event_type=f"bench.ev.{i}")
        await wait_status(app, iid, "waiting_for_message")
        t0 = time.perf_counter()
        await app.handle_cloudevent(event(f"bench.ev.{i}", {"i": i}), wait=True)
        await wait_status(app, iid, "completed")
        latencies.append((RESUMED[iid] - t0) * 1000)
    return {
        "event_resume_ms_p50": statistics.median(latencies),
        "event_resume_ms_p90": pct(latencies, 0.9),
    }


async def measure_competing(app: EddaApp, messages: int, consumers: int = 4) -> dict[str, float]:
    ids = [await ew_consumer.start(count=messages // consumers) for _ in range(consumers)]
    for iid in ids:
        await wait_status(app, iid, "waiting_for_message")
    t0 = time.perf_counter()
    for n in range(messages):
        await publish(app.storage, "jobs", {"n": n})
    for iid in ids:
        await wait_status(app, iid, "completed", timeout=600)
    return {
        "competing_msgs_per_s": messages / (time.perf_counter() - t0),
        "competing_messages": messages,
    }


async def measure_memory(app: EddaApp, n: int) -> dict[str, float]:
    gc.collect()
    base = current_rss()
    t0 = time.perf_counter()
    sampled: dict[int, int] = {}
    for i in range(1, n + 1):
        await ew_idle.start()
        if i in (n // 10, n):
            gc.collect()
            sampled[i] = current_rss()
    elapsed = time.perf_counter() - t0
    tenth = n // 10
    return {
        "waiting_instances": n,
        "waiting_mem_bytes_per_instance": (sampled[n] - sampled[tenth]) / (n - tenth),
        "waiting_rss_delta_mb": (sampled[n] - base) / 2**20,
        "suspend_per_s": n / elapsed,
    }


async def measure_cross_process(db_dir: Path, n: int) -> dict[str, float]:
    db = (db_dir / "edda_xproc.sqlite").resolve()
    worker = subprocess.Popen(
        [sys.executable, __file__, "--serve", json.dumps({"db": str(db), "n": n})],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        ids = json.loads(worker.stdout.readline())
        sender = EddaApp(service_name="bench-sender", db_url=f"sqlite:///{db}")
        await sender.storage.initialize()  # storage only: no workflow runs here
        latencies = []
        for i, iid in enumerate(ids):
            await wait_status(sender, iid, "waiting_for_message")
            t0 = time.time()
            await sender._deliver_event_to_waiting_workflows(event(f"bench.xp.{i}", {"i": i}))
            await wait_status(sender, iid, "completed")
            inst = await sender.storage.get_instance(iid)
            latencies.append((inst["output_data"]["result"] - t0) * 1000)
        await sender.storage.close()
    finally:
        worker.wait(timeout=120)
    return {
        "xproc_event_resume_ms_p50": statistics.median(latencies),
        "xproc_event_resume_ms_p90": pct(latencies, 0.9),
    }


async def serve(plan: dict[str, Any]) -> None:
    app = EddaApp(service_name="bench", db_url=f"sqlite:///{plan['db']}")
    await app.initialize()
    ids = [await ew_event_once.start(event_type=f"bench.xp.{i}") for i in range(plan["n"])]
    print(json.dumps(ids), flush=True)
    for iid in ids:
        await wait_status(app, iid, "completed")
    await app.shutdown()


async def run_all(args: Any) -> dict[str, float]:
    quick = args.quick
    db = (args.db_dir / "edda_waiting.sqlite").resolve()
    app = EddaApp(service_name="bench", db_url=f"sqlite:///{db}")
    await app.initialize()
    fig: dict[str, float] = {}
    try:
        fig.update(await measure_sleep(app, 3 if quick else 10))
        fig.update(await measure_event(app, 5 if quick else 15))
        fig.update(await measure_competing(app, 100 if quick else 400))
        fig.update(await measure_memory(app, 300 if quick else 2000))
    finally:
        await app.shutdown()
    fig.update(await measure_cross_process(args.db_dir, 3 if quick else 10))
    return fig


def main() -> None:
    import uvloop

    uvloop.install()  # as Edda installs it
    if "--serve" in sys.argv:
        asyncio.run(serve(json.loads(sys.argv[sys.argv.index("--serve") + 1])))
        return
    args = parse_args()
    fig = asyncio.run(run_all(args))
    emit("edda-waiting", version("edda-framework"), fig, quick=args.quick)


if __name__ == "__main__":
    main()
