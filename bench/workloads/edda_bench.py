"""Edda workloads (edda-framework==0.16.2, SQLite via SQLAlchemy + aiosqlite, on disk).

Edda's idiom: `@activity` coroutines awaited from an `@workflow` coroutine, the app
built with `EddaApp(db_url="sqlite:///...")`. `Workflow.start()` runs the instance
inline to completion (or to its first wait) and returns its id; the result is in the
instance row. Edda keeps SQLite's defaults (rollback journal, synchronous=FULL).

Replay: Edda replays from history whenever it resumes an instance — it loads the
history in one query and returns each recorded activity result from that cache. A
completed instance is never resumed (resume returns at once), so the bench takes the
closest real case, a crash after the last activity was recorded but before the
instance was marked completed: the status is set back to "running" (under Edda's own
lock), then `Workflow.resume(id)` — the same call Edda's recovery makes — is timed
until it has replayed every step and marked the instance completed.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from importlib.metadata import version
from typing import Any

import uvloop
from common import best_of, current_rss, emit, now, parse_args, peak_rss
from edda import EddaApp, WorkflowContext, activity, workflow
from sqlalchemy import text

# instance id -> (body entered, loop finished), as in the other peers' scripts.
BODY_TIMES: dict[str, tuple[float, float]] = {}


@activity
async def noop_step(ctx: WorkflowContext, i: int) -> int:
    """A durable step that does nothing, so only the framework's cost is measured."""
    return i


@workflow
async def steps_wf(ctx: WorkflowContext, n: int) -> int:
    """Run n no-op durable steps in sequence."""
    t0 = now()
    for i in range(n):
        await noop_step(ctx, i)
    BODY_TIMES[ctx.instance_id] = (t0, now())
    return n


async def start_and_wait(app: EddaApp, n: int) -> str:
    """Start one n-step instance, wait for it, check its stored result; its id."""
    iid = await steps_wf.start(n=n)
    inst = await app.storage.get_instance(iid)
    assert inst is not None and inst["status"] == "completed", inst
    assert inst["output_data"]["result"] == n, inst["output_data"]
    return iid


async def run_one(app: EddaApp, n: int) -> float:
    """Run one n-step workflow to completion; seconds taken."""
    t0 = now()
    await start_and_wait(app, n)
    return now() - t0


async def measure_memory(app: EddaApp, n: int) -> dict[str, float]:
    """Peak RSS growth (untraced run) and tracemalloc peak (traced run) of an n-step workflow."""
    base = current_rss()
    await run_one(app, n)
    rss_delta = max(0, peak_rss() - base)
    tracemalloc.start()
    await run_one(app, n)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"mem_rss_delta_mb": rss_delta / 2**20, "mem_tracemalloc_peak_mb": peak / 2**20}


async def measure_replay(app: EddaApp, n: int) -> dict[str, float]:
    """Record an n-step instance, reopen it as if crashed before completion, time its resume."""
    iid = await start_and_wait(app, n)
    assert len(await app.storage.get_history(iid)) == n
    for _ in range(3):  # Edda's 1 s resume poller could take the lock first; then try again
        assert await app.storage.try_acquire_lock(iid, app.worker_id)
        await app.storage.update_instance_status(iid, "running")
        await app.storage.release_lock(iid, app.worker_id)
        t0 = now()
        try:
            await steps_wf.resume(iid)
        except RuntimeError:
            continue
        total = now() - t0
        inst = await app.storage.get_instance(iid)
        assert inst is not None and inst["status"] == "completed"
        assert len(await app.storage.get_history(iid)) == n  # nothing re-executed
        body0, body1 = BODY_TIMES[iid]
        return {"replay_s": total, "replay_body_s": body1 - body0}
    raise RuntimeError("could not take Edda's lock to time the replay")


async def effective_pragmas(app: EddaApp) -> dict[str, Any]:
    """journal_mode and synchronous on Edda's own connection."""
    async with app.storage.engine.connect() as c:
        jm = (await c.execute(text("PRAGMA journal_mode"))).scalar()
        sync = (await c.execute(text("PRAGMA synchronous"))).scalar()
    return {"journal_mode": jm, "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[sync]}


async def run_all(args: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """Every workload on one EddaApp over a fresh database file."""
    s = args.sizes
    db = (args.db_dir / "edda.sqlite").resolve()
    app = EddaApp(service_name="bench", db_url=f"sqlite:///{db}")
    await app.initialize()
    try:
        await run_one(app, 5)  # warm-up
        fig: dict[str, float] = {}
        fig.update(await measure_memory(app, s.memory_n))  # first: keeps peak RSS honest
        t_zero = min([await run_one(app, 0) for _ in range(3)])
        t_n = min([await run_one(app, s.per_step_n) for _ in range(s.repeats)])
        fig["fresh_s"] = t_n
        fig["per_step_us"] = (t_n - t_zero) / s.per_step_n * 1e6
        t0 = now()
        for _ in range(s.n_workflows):
            await start_and_wait(app, s.wf_steps)
        fig["seq_wf_per_s"] = s.n_workflows / (now() - t0)
        t0 = now()
        results = await asyncio.gather(
            *(start_and_wait(app, s.wf_steps) for _ in range(s.n_workflows)),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        fig["conc_wf_per_s"] = (s.n_workflows - len(failed)) / (now() - t0)
        fig["conc_failed"] = len(failed)
        replays = [await measure_replay(app, s.replay_n) for _ in range(s.repeats)]
        fig.update(best_of(replays, "replay_s"))
        info: dict[str, Any] = await effective_pragmas(app)
        if failed:
            first = str(failed[0]).splitlines()[0][:200]
            info["conc_first_error"] = f"{type(failed[0]).__name__}: {first}"
    finally:
        await app.shutdown()
    return fig, info


def main() -> None:
    """Run under uvloop, as Edda itself installs it, and print one JSON line."""
    args = parse_args()
    uvloop.install()
    fig, info = asyncio.run(run_all(args))
    emit("edda", version("edda-framework"), fig, quick=args.quick, **info)


if __name__ == "__main__":
    main()
