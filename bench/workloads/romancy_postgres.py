"""romancy_nb on PostgreSQL (bench/postgres.py runs it; DBOS's peer is dbos_postgres.py).

The workflows are the SQLite bench's own (``steps_wf`` of no-op activities, and
``bw_event_once`` waiting for one event), imported, so both backends run the same code:

- ``per_step_us``: one ``rn.App(url)`` in this process; (an N-step workflow − a 0-step
  one) / N, best of the repeats, as in romancy_bench.py; ``per_step_cpu_us`` the same for
  this process's CPU time (every thread).
- ``wf_per_s_<k>w``: k ``romancy-nb worker --app <this file>`` processes (each at most
  ``concurrency`` instances at once); this process is a client, ``App(url,
  max_concurrent=0)``, that starts ``n_workflows`` instances of ``wf_steps`` steps; the
  time is from the first start to the last completion the store recorded.
- ``xproc_event_ms_p50`` / ``_p90``: the client starts instances that wait for an event;
  one worker process claims them; the client sends each event (the worker idle for 50 ms
  before it) and the workflow, resumed in the worker, returns its wall-clock time.

    python bench/workloads/romancy_postgres.py --url postgresql://... [--quick]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

from common import emit
from pg_common import parse_pg_args, pct, per_step_figures, timed, wait_done, worker_processes
from romancy_bench import run_one, steps_wf
from romancy_waiting import bw_event_once

import romancy_nb as rn

HERE = Path(__file__).resolve().parent
DONE_SQL = (
    "SELECT count(*), coalesce(max(updated_at), 0) FROM workflow_instances"
    " WHERE workflow_name = %s AND status = 'completed' AND created_at >= %s"
)


async def measure_per_step(url: str, n: int, repeats: int) -> dict[str, float]:
    """Per-step overhead of one in-process App on the server."""
    async with rn.App(url) as app:
        await run_one(app, 5)  # warm-up: pool connections, prepared statements
        zero = min([await timed(run_one(app, 0)) for _ in range(3)])
        full = min([await timed(run_one(app, n)) for _ in range(repeats)])
    return per_step_figures(zero, full, n)


def _workers(url: str, k: int, concurrency: int) -> Any:
    command = [sys.executable, "-m", "romancy_nb.cli", "worker", "--app", __file__]
    command += ["--db", url, "--max-concurrent", str(concurrency)]
    return worker_processes([command] * k, "serving", env={"PYTHONPATH": str(HERE)})


async def measure_throughput(url: str, k: int, s: Any) -> dict[str, float]:
    """n workflows started by a client, run by k worker processes."""
    with _workers(url, k, s.concurrency):
        async with rn.App(url, max_concurrent=0) as client:
            warm = [await client.start(steps_wf, 1) for _ in range(4 * k)]
            for iid in warm:
                await client.result(iid, timeout=60)
            t0 = time.time()
            for _ in range(s.n_workflows):
                await client.start(steps_wf, s.wf_steps)
            started = time.time() - t0
            done = await asyncio.to_thread(
                wait_done, url, DONE_SQL, (steps_wf.name, t0), s.n_workflows, 600
            )
    return {f"wf_per_s_{k}w": s.n_workflows / (done - t0), f"start_s_{k}w": started}


async def measure_event(url: str, n: int) -> dict[str, float]:
    """send_event in this process → the instance resumed in a worker process."""
    latencies = []
    with _workers(url, 1, n):
        async with rn.App(url, max_concurrent=0) as client:
            ids = [await client.start(bw_event_once, f"bench.pg.{i}") for i in range(n)]
            for i, iid in enumerate(ids):
                while client.get_instance(iid).status != "waiting_for_event":
                    await asyncio.sleep(0.005)
                await asyncio.sleep(0.05)  # the worker goes idle: no lucky in-flight poll
                t0 = time.time()
                await client.send_event(f"bench.pg.{i}", i)
                resumed = await client.result(iid, timeout=30)
                latencies.append((resumed - t0) * 1000)
    return {
        "xproc_event_ms_p50": statistics.median(latencies),
        "xproc_event_ms_p90": pct(latencies, 0.9),
    }


async def run_all(args: Any) -> dict[str, float]:
    s = args.sizes
    fig = await measure_per_step(args.url, s.per_step_n, s.repeats)
    if args.per_step_only:
        return fig
    for k in s.workers:
        fig.update(await measure_throughput(args.url, k, s))
    fig.update(await measure_event(args.url, s.events))
    return fig


def main() -> None:
    args = parse_pg_args()
    fig = asyncio.run(run_all(args))
    emit("romancy_nb-postgres", version("romancy-nb"), fig, sizes=asdict(args.sizes))


if __name__ == "__main__":
    main()
