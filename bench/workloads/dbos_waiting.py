"""DBOS waiting workloads (dbos==3.4.0, SQLite system database), peers of romancy_waiting.py.

DBOS's own idiom: synchronous workflows; ``DBOS.sleep`` (durable: the wake-up time is
recorded, the thread sleeps), ``DBOS.recv`` / ``DBOS.send`` for messages to one workflow id
(point-to-point; DBOS has no broadcast/competing channels — its nearest is a queue, so the
message-throughput figure is send → recv into one consuming workflow). Each waiting workflow
holds a thread while it waits, so the 100,000-waiting-instances memory figure is not taken.

- ``sleep_late_ms_*``: ``DBOS.sleep(1)`` lateness, N workflows at once.
- ``event_resume_ms_*``: ``DBOS.send`` → the ``DBOS.recv``-ing workflow returns, same process.
- ``xproc_event_resume_ms_*``: the same, sent with ``DBOSClient`` from this process to a
  workflow running in a DBOS subprocess on the same SQLite file.
- ``send_recv_msgs_per_s``: messages sent from outside and received by one workflow.

    bench/.venvs/dbos/bin/python bench/workloads/dbos_waiting.py --db-dir /tmp/x [--quick]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from common import emit, parse_args
from dbos import DBOS, DBOSClient, DBOSConfig, SetWorkflowID


@DBOS.workflow()
def dw_sleeper(seconds: float) -> float:
    before = time.time()
    DBOS.sleep(seconds)
    return (time.time() - before - seconds) * 1000


@DBOS.workflow()
def dw_receiver(topic: str) -> list[float]:
    message = DBOS.recv(topic, timeout_seconds=120)
    assert message is not None
    return [time.perf_counter(), time.time()]


@DBOS.workflow()
def dw_consumer(count: int) -> int:
    got = 0
    while got < count:
        if DBOS.recv("jobs", timeout_seconds=120) is None:
            break
        got += 1
    return got


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def launch(db: Path) -> None:
    config: DBOSConfig = {
        "name": "bench-waiting",
        "system_database_url": f"sqlite:///{db}",
        "log_level": "ERROR",
    }
    DBOS(config=config)
    DBOS.launch()


def wait_pending(workflow_id: str, seconds: float = 0.3) -> None:
    """DBOS shows no 'waiting' status for recv: give the workflow time to reach it."""
    deadline = time.time() + 30
    while DBOS.get_workflow_status(workflow_id) is None and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(seconds)


def measure_sleep(n: int) -> dict[str, float]:
    handles = [DBOS.start_workflow(dw_sleeper, 1.0) for _ in range(n)]
    late = [h.get_result() for h in handles]
    return {"sleep_late_ms_p50": statistics.median(late), "sleep_late_ms_max": max(late)}


def measure_event(n: int) -> dict[str, float]:
    latencies = []
    for i in range(n):
        handle = DBOS.start_workflow(dw_receiver, "go")
        wait_pending(handle.workflow_id)
        t0 = time.perf_counter()
        DBOS.send(handle.workflow_id, i, "go")
        resumed, _ = handle.get_result()
        latencies.append((resumed - t0) * 1000)
    return {
        "event_resume_ms_p50": statistics.median(latencies),
        "event_resume_ms_p90": pct(latencies, 0.9),
    }


def measure_send_recv(n: int) -> dict[str, float]:
    handle = DBOS.start_workflow(dw_consumer, n)
    wait_pending(handle.workflow_id, 0.1)
    t0 = time.perf_counter()
    for i in range(n):
        DBOS.send(handle.workflow_id, i, "jobs")
    assert handle.get_result() == n
    return {"send_recv_msgs_per_s": n / (time.perf_counter() - t0), "send_recv_messages": n}


def measure_cross_process(db_dir: Path, n: int) -> dict[str, float]:
    db = (db_dir / "dbos_xproc.sqlite").resolve()
    worker = subprocess.Popen(
        [sys.executable, __file__, "--serve", json.dumps({"db": str(db), "n": n})],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        client = DBOSClient(system_database_url=f"sqlite:///{db}")
        latencies = []
        for i in range(n):
            time.sleep(0.3)  # the receiver has reached recv and gone idle
            t0 = time.time()
            client.send(f"xp-{i}", i, "go")
            _, resumed = client.retrieve_workflow(f"xp-{i}").get_result()
            latencies.append((resumed - t0) * 1000)
        client.destroy()
    finally:
        worker.wait(timeout=120)
    return {
        "xproc_event_resume_ms_p50": statistics.median(latencies),
        "xproc_event_resume_ms_p90": pct(latencies, 0.9),
    }


def serve(plan: dict[str, Any]) -> None:
    launch(Path(plan["db"]))
    handles = []
    for i in range(plan["n"]):
        with SetWorkflowID(f"xp-{i}"):
            handles.append(DBOS.start_workflow(dw_receiver, "go"))
    print("ready", flush=True)
    for handle in handles:
        handle.get_result()
    DBOS.destroy()


def main() -> None:
    if "--serve" in sys.argv:
        serve(json.loads(sys.argv[sys.argv.index("--serve") + 1]))
        return
    args = parse_args()
    quick = args.quick
    launch((args.db_dir / "dbos_waiting.sqlite").resolve())
    fig: dict[str, float] = {}
    try:
        fig.update(measure_sleep(5 if quick else 20))
        fig.update(measure_event(10 if quick else 30))
        fig.update(measure_send_recv(200 if quick else 1000))
    finally:
        DBOS.destroy()
    fig.update(measure_cross_process(args.db_dir, 5 if quick else 15))
    emit("dbos-waiting", version("dbos"), fig, quick=quick, threads=threading.active_count())


if __name__ == "__main__":
    main()
