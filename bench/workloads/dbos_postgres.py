"""DBOS 3.4 on PostgreSQL (its system database on bench/postgres.py's server), the peer of
romancy_postgres.py, with the SQLite bench's own workflows (imported):

- ``per_step_us``: DBOS launched in this process, a synchronous ``@DBOS.workflow()`` of
  ``@DBOS.step()`` no-ops called in this thread, as in dbos_bench.py (and
  ``per_step_cpu_us``, this process's CPU time).
- ``wf_per_s_<k>w``: DBOS's way of spreading work over processes is a queue: k DBOS
  processes (distinct ``executor_id``, one application version) each serve the queue with
  ``worker_concurrency`` = the same per-process limit romancy_nb's workers get, polling
  it every ``POLL`` s (DBOS's default is 1 s; a shorter poll only helps it here); a
  ``DBOSClient`` in this process enqueues the workflows; the time is from the first
  enqueue to the last completion the system database recorded.
- ``xproc_event_ms_p50`` / ``_p90``: the client enqueues receivers (``DBOS.recv``), one
  DBOS process runs them; the client ``send``s to each (0.3 s after it is PENDING, so it
  sits in ``recv``), and the receiver returns its wall-clock time on waking.

    bench/.venvs/dbos/bin/python bench/workloads/dbos_postgres.py --url postgresql://...
"""

from __future__ import annotations

import json
import signal
import statistics
import sys
import threading
import time
from dataclasses import asdict
from importlib.metadata import version
from typing import Any

from common import emit
from dbos import DBOS, DBOSClient, DBOSConfig
from dbos_bench import run_one, steps_wf
from dbos_waiting import dw_receiver
from pg_common import parse_pg_args, pct, per_step_figures, timed_sync, wait_done, worker_processes

QUEUE = "bench"
VERSION = "bench-pg"  # one application version for every process, so any may dequeue
POLL = 0.01
DONE_SQL = (
    "SELECT count(*), coalesce(max(updated_at), 0) / 1000.0 FROM dbos.workflow_status"
    " WHERE name = %s AND status = 'SUCCESS' AND created_at >= %s"
)


def launch(url: str, executor: str) -> None:
    config: DBOSConfig = {
        "name": "bench",
        "system_database_url": url,
        "log_level": "ERROR",
        "executor_id": executor,
        "application_version": VERSION,
    }
    DBOS(config=config)
    DBOS.launch()


def measure_per_step(url: str, n: int, repeats: int) -> dict[str, float]:
    launch(url, "local")
    try:
        run_one(5)  # warm-up
        zero = min(timed_sync(run_one, 0) for _ in range(3))
        full = min(timed_sync(run_one, n) for _ in range(repeats))
    finally:
        DBOS.destroy()
    return per_step_figures(zero, full, n)


def _workers(url: str, names: list[str], concurrency: int) -> Any:
    commands = [
        [sys.executable, __file__, "--url", url, "--serve", json.dumps([name, concurrency])]
        for name in names
    ]
    return worker_processes(commands, "ready")


def _enqueue(client: DBOSClient, name: str, *args: Any, workflow_id: str | None = None) -> Any:
    options: Any = {"queue_name": QUEUE, "workflow_name": name, "app_version": VERSION}
    if workflow_id:
        options["workflow_id"] = workflow_id
    return client.enqueue(options, *args)


def measure_throughput(url: str, k: int, s: Any) -> dict[str, float]:
    with _workers(url, [f"w{k}-{j}" for j in range(k)], s.concurrency):
        client = DBOSClient(system_database_url=url)
        try:
            warm = [_enqueue(client, steps_wf.__qualname__, 1) for _ in range(4 * k)]
            for handle in warm:
                handle.get_result()
            t0 = time.time()
            for _ in range(s.n_workflows):
                _enqueue(client, steps_wf.__qualname__, s.wf_steps)
            started = time.time() - t0
            done = wait_done(
                url, DONE_SQL, (steps_wf.__qualname__, int(t0 * 1000)), s.n_workflows, 600
            )
        finally:
            client.destroy()
    return {f"wf_per_s_{k}w": s.n_workflows / (done - t0), f"start_s_{k}w": started}


def measure_event(url: str, n: int) -> dict[str, float]:
    latencies = []
    with _workers(url, ["events"], n):
        client = DBOSClient(system_database_url=url)
        try:
            for i in range(n):
                _enqueue(client, dw_receiver.__qualname__, "go", workflow_id=f"xp-{i}")
            for i in range(n):
                while client.retrieve_workflow(f"xp-{i}").get_status().status != "PENDING":
                    time.sleep(0.005)
                time.sleep(0.3)  # it reaches recv and goes idle
                t0 = time.time()
                client.send(f"xp-{i}", i, "go")
                _, resumed = client.retrieve_workflow(f"xp-{i}").get_result()
                latencies.append((resumed - t0) * 1000)
        finally:
            client.destroy()
    return {
        "xproc_event_ms_p50": statistics.median(latencies),
        "xproc_event_ms_p90": pct(latencies, 0.9),
    }


def serve(url: str, plan: str) -> None:
    """A worker process: serve the queue until SIGTERM."""
    executor, concurrency = json.loads(plan)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    launch(url, executor)
    DBOS.register_queue(QUEUE, worker_concurrency=concurrency, polling_interval_sec=POLL)
    print("ready", flush=True)
    stop.wait()
    DBOS.destroy()


def main() -> None:
    args = parse_pg_args()
    if args.serve:
        serve(args.url, args.serve)
        return
    s = args.sizes
    fig = measure_per_step(args.url, s.per_step_n, s.repeats)
    if not args.per_step_only:
        for k in s.workers:
            fig.update(measure_throughput(args.url, k, s))
        fig.update(measure_event(args.url, s.events))
    emit("dbos-postgres", version("dbos"), fig, sizes=asdict(s), poll_s=POLL)


if __name__ == "__main__":
    main()
