"""DBOS workloads (dbos==3.4.0, SQLite system database on disk).

DBOS's own idiom is used: synchronous `@DBOS.workflow()` functions whose body calls
`@DBOS.step()` functions; calling a workflow runs it in the caller's thread, and
`DBOS.start_workflow` runs it on DBOS's executor pool. DBOS keeps SQLite's defaults
(rollback journal, synchronous=FULL), so every step is an fsync'ed commit.

Replay: a completed workflow called again by id returns its stored result without
running its body, so that is not a replay. DBOS replays recorded steps when it
re-executes a workflow whose steps are checkpointed: recovery of a PENDING workflow or
`DBOS.fork_workflow(id, start_step)`. Both hand the run to DBOS's internal queue, whose
poller wakes about once a second, so the figure is taken inside the workflow body
(first step entered → last recorded step returned) of a fork that starts after the
last step (all 1,000 outputs copied, none executed). The end-to-end fork time is
reported too.
"""

from __future__ import annotations

import tracemalloc
from importlib.metadata import version
from typing import Any

import sqlalchemy as sa
from common import best_of, current_rss, emit, now, parse_args, peak_rss
from dbos import DBOS, DBOSConfig, SetWorkflowID
from dbos._dbos import _get_dbos_instance

# workflow id -> (body entered, loop finished); lets replay be timed inside the body.
BODY_TIMES: dict[str, tuple[float, float]] = {}


@DBOS.step()
def noop_step(i: int) -> int:
    """A durable step that does nothing, so only the framework's cost is measured."""
    return i


@DBOS.workflow()
def steps_wf(n: int) -> int:
    """Run n no-op durable steps in sequence."""
    t0 = now()
    for i in range(n):
        noop_step(i)
    BODY_TIMES[DBOS.workflow_id or ""] = (t0, now())
    return n


def run_one(n: int) -> float:
    """Run one n-step workflow to completion; seconds taken."""
    t0 = now()
    assert steps_wf(n) == n
    return now() - t0


def measure_memory(n: int) -> dict[str, float]:
    """Peak RSS growth (untraced run) and tracemalloc peak (traced run) of an n-step workflow."""
    base = current_rss()
    run_one(n)
    rss_delta = max(0, peak_rss() - base)
    tracemalloc.start()
    run_one(n)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"mem_rss_delta_mb": rss_delta / 2**20, "mem_tracemalloc_peak_mb": peak / 2**20}


def measure_replay(n: int, wid: str) -> dict[str, float]:
    """Record an n-step workflow, then fork it after its last step so every step replays."""
    with SetWorkflowID(wid):
        steps_wf(n)
    t0 = now()
    handle = DBOS.fork_workflow(wid, n + 1)  # step ids start at 1: steps 1..n are copied
    assert handle.get_result() == n
    total = now() - t0
    body0, body1 = BODY_TIMES[handle.workflow_id]
    recorded = len(DBOS.list_workflow_steps(handle.workflow_id))
    assert recorded == n, recorded
    # A completed id called again returns the stored result without running the body.
    t1 = now()
    with SetWorkflowID(wid):
        steps_wf(n)
    rerun = now() - t1
    return {
        "replay_s": body1 - body0,
        "replay_fork_end_to_end_s": total,
        "rerun_completed_s": rerun,
    }


def effective_pragmas() -> dict[str, Any]:
    """journal_mode and synchronous on DBOS's own system-database connection."""
    with _get_dbos_instance()._sys_db.engine.connect() as c:
        jm = c.execute(sa.text("PRAGMA journal_mode")).scalar()
        sync = c.execute(sa.text("PRAGMA synchronous")).scalar()
    return {"journal_mode": jm, "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[sync]}


def main() -> None:
    """Launch DBOS on a fresh SQLite file, run every workload, print one JSON line."""
    args = parse_args()
    s = args.sizes
    db = (args.db_dir / "dbos_sys.sqlite").resolve()
    config: DBOSConfig = {
        "name": "bench",
        "system_database_url": f"sqlite:///{db}",
        "log_level": "ERROR",
    }
    DBOS(config=config)
    DBOS.launch()
    try:
        run_one(5)  # warm-up: first-use costs (prepared statements, imports)
        fig: dict[str, float] = {}
        fig.update(measure_memory(s.memory_n))  # first, so peak RSS is not inflated by others
        t_zero = min(run_one(0) for _ in range(3))
        t_n = min(run_one(s.per_step_n) for _ in range(s.repeats))
        fig["fresh_s"] = t_n
        fig["per_step_us"] = (t_n - t_zero) / s.per_step_n * 1e6
        t0 = now()
        for _ in range(s.n_workflows):
            assert steps_wf(s.wf_steps) == s.wf_steps
        fig["seq_wf_per_s"] = s.n_workflows / (now() - t0)
        t0 = now()
        handles = [DBOS.start_workflow(steps_wf, s.wf_steps) for _ in range(s.n_workflows)]
        assert all(h.get_result() == s.wf_steps for h in handles)
        fig["conc_wf_per_s"] = s.n_workflows / (now() - t0)
        replays = [measure_replay(s.replay_n, f"replay-{k}") for k in range(s.repeats)]
        fig.update(best_of(replays, "replay_s"))
        pragmas = effective_pragmas()
    finally:
        DBOS.destroy()
    emit("dbos", version("dbos"), fig, quick=args.quick, **pragmas)


if __name__ == "__main__":
    main()
