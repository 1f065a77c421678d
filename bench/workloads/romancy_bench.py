"""romancy_nb workloads (APSW SQLite file, WAL), in one durability mode per run.

The same work as the DBOS and Edda scripts, written as DESIGN §2 says: `@rn.activity`
coroutines awaited from an `@rn.workflow`, `app.start` + `app.result`. Run it twice,
`--synchronous NORMAL` (the default: survives any process crash) and `--synchronous FULL`
(fsync per commit, survives power loss, like DBOS's and Edda's SQLite defaults), so
every ratio can also be read like for like.

Replay is taken two ways. Crash recovery (`replay_recovery_s`, public API only, the same
situation as the Edda figure): a child process records n steps, then is SIGKILLed inside
step n+1; a new `rn.App` on the file finds the orphan (its holder's pid is gone), replays
the n recorded steps from one bulk history read, runs the last step, and the time from
opening that App to the result is taken. And, once the engine has it, `app.replay(iid)`
(`replay_api_s`), the engine's own re-run of a completed instance against its history.
`replay_s` is the latter when it exists, the former otherwise (`replay_method` says which).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tracemalloc
from importlib.metadata import version
from pathlib import Path
from typing import Any

from common import best_of, current_rss, emit, now, parse_args, peak_rss

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


@rn.activity
async def gate(ctx: rn.ActivityContext) -> int:
    """In the crash child: say "n steps recorded" and hang until killed; elsewhere: pass."""
    ready = os.environ.get("BENCH_CRASH_READY")
    if ready:
        Path(ready).touch()
        await asyncio.sleep(3600)
    return 0


@rn.workflow
async def crash_wf(ctx: rn.WorkflowContext, n: int) -> int:
    """n no-op steps, then the gate step the crash child dies in."""
    for i in range(n):
        await noop_step(ctx, i)
    await gate(ctx)
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
    t0 = now()
    report = await app.replay(iid)
    elapsed = now() - t0
    if report.outcome != "completed" or report.replayed != n:
        raise RuntimeError(f"replay did not answer all {n} steps from history: {report}")
    return {"replay_api_s": elapsed}


async def crash_child(db: str, sync: str, iid: str, n: int) -> None:
    """Child process: run crash_wf until the gate hangs; the parent kills us there."""
    async with rn.App(db, synchronous=sync) as app:
        await app.start(crash_wf, n, instance_id=iid)
        await asyncio.sleep(3600)


async def measure_recovery(db_dir: Path, sync: str, n: int, k: int) -> dict[str, float]:
    """Kill a worker after n recorded steps; time a new App's recovery replay to the result."""
    db, iid = str(db_dir / f"recovery_{k}.db"), f"crash-{k}"
    ready = db_dir / f"ready_{k}"
    cmd = [sys.executable, __file__, "--db-dir", str(db_dir), "--synchronous", sync]
    cmd += ["--crash-child", iid, "--crash-db", db, "--crash-steps", str(n)]
    env = {**os.environ, "BENCH_CRASH_READY": str(ready)}
    child = subprocess.Popen(cmd, env=env)
    try:
        while not ready.exists():
            if child.poll() is not None:
                raise RuntimeError(f"crash child exited early ({child.returncode})")
            await asyncio.sleep(0.01)
    finally:
        child.kill()  # SIGKILL: no cleanup, the lock on the instance stays behind
        child.wait()
    t0 = now()
    async with rn.App(db, synchronous=sync) as app:
        opened = now() - t0  # migrations checked, worker registered, orphan claimed
        assert await app.result(iid) == n
        elapsed = now() - t0
        recorded = sum(step.kind == "activity" for step in app.get_history(iid))
    assert recorded == n + 1, recorded  # n replayed steps + the gate, each recorded once
    return {"replay_recovery_s": elapsed, "replay_recovery_open_s": opened}


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
        t_n = min([await run_one(app, s.per_step_n) for _ in range(s.repeats)])
        fig["fresh_s"] = t_n
        fig["per_step_us"] = (t_n - t_zero) / s.per_step_n * 1e6
        t0 = now()
        for _ in range(s.n_workflows):
            await start_and_wait(app, s.wf_steps)
        fig["seq_wf_per_s"] = s.n_workflows / (now() - t0)
        t0 = now()
        await asyncio.gather(*(start_and_wait(app, s.wf_steps) for _ in range(s.n_workflows)))
        fig["conc_wf_per_s"] = s.n_workflows / (now() - t0)
        info: dict[str, Any] = {"synchronous": args.synchronous}
        if hasattr(app, "replay"):
            replays = [await measure_replay(app, s.replay_n) for _ in range(s.repeats)]
            fig.update(best_of(replays, "replay_api_s"))
    recov = [
        await measure_recovery(args.db_dir.resolve(), args.synchronous, s.replay_n, k)
        for k in range(s.repeats)
    ]
    fig.update(best_of(recov, "replay_recovery_s"))
    method = "replay_api_s" if "replay_api_s" in fig else "replay_recovery_s"
    fig["replay_s"] = fig[method]
    return fig, {**store_info(db), **info, "replay_method": method}


def main() -> None:
    """Run on the default asyncio loop and print one JSON line."""
    args = parse_args(
        {
            "--synchronous": {"choices": ["NORMAL", "FULL"], "default": "NORMAL"},
            "--crash-child": {"help": "internal: run as the worker that gets killed"},
            "--crash-db": {},
            "--crash-steps": {"type": int},
        }
    )
    if args.crash_child:
        asyncio.run(
            crash_child(args.crash_db, args.synchronous, args.crash_child, args.crash_steps)
        )
        return
    fig, info = asyncio.run(run_all(args))
    emit(f"romancy_nb-{args.synchronous}", version("romancy-nb"), fig, quick=args.quick, **info)


if __name__ == "__main__":
    main()
