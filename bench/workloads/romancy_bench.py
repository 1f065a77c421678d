"""romancy_nb workloads (APSW SQLite file, WAL), in one durability mode per run.

The same work as the DBOS and Edda scripts, written as DESIGN §2 says: `@rn.activity`
coroutines awaited from an `@rn.workflow`, `app.start` + `app.result`. Run it twice,
`--synchronous NORMAL` (the default: survives any process crash) and `--synchronous FULL`
(fsync per commit, survives power loss, like DBOS's and Edda's SQLite defaults), so
every ratio can also be read like for like.

Replay: `app.replay(iid)` re-runs a completed instance against its recorded history
(every step answered from history, none executed) — the engine's own replay, the one
`%romancy replay` uses. It is timed end to end.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from importlib.metadata import version
from typing import Any

from common import current_rss, emit, now, parse_args, peak_rss

import romancy_nb as rn

# instance id -> (body entered, loop finished), as in the other peers' scripts.
BODY_TIMES: dict[str, tuple[float, float]] = {}


@rn.activity
async def noop_step(ctx: rn.ActivityContext, i: int) -> int:
    """A durable step that does nothing, so only the framework's cost is measured."""
    return i


@rn.workflow
async def steps_wf(ctx: rn.WorkflowContext, n: int) -> int:
    """Run n no-op durable steps in sequence."""
    t0 = now()
    for i in range(n):
        await noop_step(ctx, i)
    BODY_TIMES[ctx.instance_id] = (t0, now())
    return n


async def start_and_wait(app: rn.App, n: int) -> str:
    """Start one n-step instance and wait for its result; its id."""
    iid = await app.start(steps_wf, n)
    assert await app.result(iid) == n
    return iid


async def run_one(app: rn.App, n: int) -> float:
    """Run one n-step workflow to completion; seconds taken."""
    t0 = now()
    await start_and_wait(app, n)
    return now() - t0


async def measure_memory(app: rn.App, n: int) -> dict[str, float]:
    """Peak RSS growth (untraced run) and tracemalloc peak (traced run) of an n-step workflow."""
    base = current_rss()
    await run_one(app, n)
    rss_delta = max(0, peak_rss() - base)
    tracemalloc.start()
    await run_one(app, n)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"mem_rss_delta_mb": rss_delta / 2**20, "mem_tracemalloc_peak_mb": peak / 2**20}


async def measure_replay(app: rn.App, n: int) -> dict[str, float]:
    """Record an n-step instance, then time the engine's replay of it."""
    iid = await start_and_wait(app, n)
    BODY_TIMES.pop(iid)
    t0 = now()
    await app.replay(iid)
    total = now() - t0
    figures = {"replay_s": total}
    if iid in BODY_TIMES:
        body0, body1 = BODY_TIMES[iid]
        figures["replay_body_s"] = body1 - body0
    return figures


def store_info(path: str) -> dict[str, Any]:
    """SQLite library APSW links, and the journal mode left in the file."""
    import apsw

    con = apsw.Connection(path)
    try:
        jm = next(iter(con.execute("PRAGMA journal_mode")))[0]
    finally:
        con.close()
    return {"apsw_sqlite": apsw.sqlite_lib_version(), "journal_mode": jm}


async def run_all(args: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """Every workload on one App over a fresh database file."""
    s = args.sizes
    db = str((args.db_dir / f"romancy_{args.synchronous.lower()}.db").resolve())
    async with rn.App(db, synchronous=args.synchronous) as app:
        await run_one(app, 5)  # warm-up
        fig: dict[str, float] = {}
        fig.update(await measure_memory(app, s.memory_n))  # first: keeps peak RSS honest
        t_zero = min([await run_one(app, 0) for _ in range(3)])
        t_n = await run_one(app, s.per_step_n)
        fig["per_step_us"] = (t_n - t_zero) / s.per_step_n * 1e6
        t0 = now()
        for _ in range(s.n_workflows):
            await start_and_wait(app, s.wf_steps)
        fig["seq_wf_per_s"] = s.n_workflows / (now() - t0)
        t0 = now()
        await asyncio.gather(*(start_and_wait(app, s.wf_steps) for _ in range(s.n_workflows)))
        fig["conc_wf_per_s"] = s.n_workflows / (now() - t0)
        fig["fresh_s"] = await run_one(app, s.fresh_n)
        fig.update(await measure_replay(app, s.replay_n))
    return fig, {**store_info(db), "synchronous": args.synchronous}


def main() -> None:
    """Run on the default asyncio loop and print one JSON line."""
    args = parse_args({"--synchronous": {"choices": ["NORMAL", "FULL"], "default": "NORMAL"}})
    fig, info = asyncio.run(run_all(args))
    emit(f"romancy_nb-{args.synchronous}", version("romancy-nb"), fig, quick=args.quick, **info)


if __name__ == "__main__":
    main()
