"""Helpers shared by the PostgreSQL workloads of romancy_nb and DBOS (bench/postgres.py).

Both venvs have psycopg (romancy_nb's ``postgres`` extra, DBOS's own dependency), so this
module may import it; what both scripts must do alike lives here: the sizes, the worker
processes and how the end of a batch is seen, so that neither side is timed differently.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class PgSizes:
    """How much work each PostgreSQL figure does; --quick shrinks it for a smoke test."""

    per_step_n: int = 300  # steps of the per-step workflow (each one an fsync'ed commit)
    repeats: int = 3  # per-step runs; the best one counts
    n_workflows: int = 200  # workflows per throughput batch
    wf_steps: int = 10  # steps in each of those workflows
    workers: tuple[int, ...] = (1, 2, 4)  # worker processes per throughput batch
    concurrency: int = 20  # instances one worker process runs at once
    events: int = 30  # cross-process event wake-ups timed


PG_QUICK = PgSizes(per_step_n=50, repeats=1, n_workflows=40, workers=(1, 2), events=8)


def parse_pg_args() -> argparse.Namespace:
    """Flags of both PostgreSQL workload scripts."""
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True, help="postgresql:// URL of the peer's own database")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    p.add_argument("--per-step-only", action="store_true", help="only the per-step figure")
    p.add_argument("--serve", help="internal: run as a worker process (JSON plan)")
    args = p.parse_args()
    args.sizes = PG_QUICK if args.quick else PgSizes()
    return args


def pct(values: Sequence[float], q: float) -> float:
    """The q-quantile (nearest rank) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds() -> float:
    """CPU time of this process so far, every thread, user + system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def timed(run: Awaitable[float]) -> tuple[float, float]:
    """(wall seconds the awaited run reports, CPU seconds it took)."""
    cpu = cpu_seconds()
    wall = await run
    return wall, cpu_seconds() - cpu


def timed_sync(run: Callable[[int], float], n: int) -> tuple[float, float]:
    """(wall seconds ``run(n)`` reports, CPU seconds it took)."""
    cpu = cpu_seconds()
    wall = run(n)
    return wall, cpu_seconds() - cpu


def per_step_figures(
    zero: tuple[float, float], full: tuple[float, float], n: int
) -> dict[str, float]:
    """Per-step wall and CPU overhead from the best 0-step and n-step runs (wall, CPU)."""
    return {
        "per_step_us": (full[0] - zero[0]) / n * 1e6,
        "per_step_cpu_us": (full[1] - zero[1]) / n * 1e6,
        "per_step_fresh_s": full[0],
    }


def wait_done(url: str, query: str, params: Sequence[object], n: int, timeout: float) -> float:
    """Poll ``query`` (→ count done, latest completion time) until count reaches n.

    One connection polling every 2 ms, the same for both frameworks, so how a client
    learns of a result elsewhere (romancy_nb's result() backs off to 0.25 s, DBOS's handles
    poll) does not enter the figure; the completion time the store recorded does.
    """
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as con:
        while True:
            row = con.execute(query, params).fetchone()
            assert row is not None
            if row[0] >= n:
                return float(row[1])
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {row[0]} of {n} workflows completed in {timeout:.0f} s")
            time.sleep(0.002)


@contextmanager
def worker_processes(
    commands: Sequence[Sequence[str]], ready: str, env: dict[str, str] | None = None
) -> Iterator[list[subprocess.Popen[str]]]:
    """Start one process per command, wait until each prints a line containing ``ready``,
    and SIGTERM them (then wait) when the block ends."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for command in commands:
            proc = subprocess.Popen(
                list(command), stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
            )
            procs.append(proc)
            assert proc.stdout is not None
            for line in proc.stdout:
                if ready in line:
                    break
            else:
                raise RuntimeError(f"worker {command} exited ({proc.wait()}) before it was ready")
            # keep reading what it prints, so a full pipe never blocks it
            threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
