"""PostgreSQL benchmarks: romancy_nb and DBOS 3.4 on one private PostgreSQL server, one run.

The server is tests/postgres_server.py's (initdb in a temporary folder, a free loopback
port), switched to normal durability before anything runs: ``fsync`` and
``full_page_writes`` on, ``synchronous_commit = on`` (every commit waits for its WAL
flush). Each peer gets a fresh database on it and runs in its bench/.venvs/ virtualenv
(the same venvs as bench/run.py), one peer at a time. Before each peer the floor is
measured: one round trip of a trivial INSERT through psycopg (autocommit, so one
commit and one WAL flush each). A second pass with ``synchronous_commit = off`` (commits
no longer wait for the disk) takes only the per-step figure, to show the overhead that is
not the disk's.

    python bench/postgres.py            # full sizes; writes the PostgreSQL section of RESULTS.md
    python bench/postgres.py --quick    # smoke test, prints the table only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(BENCH / "workloads"), str(ROOT)]
from common import RESULT_MARKER  # noqa: E402
from pg_report import render_section, splice  # noqa: E402
from run import ROMANCY_REQ, Peer, ensure_venv, machine_facts  # noqa: E402

from tests.postgres_server import PostgresServer, launch  # noqa: E402

PEERS = (
    Peer("dbos", "dbos", ("dbos==3.4.0",), "dbos_postgres.py"),
    Peer("romancy", "romancy", ROMANCY_REQ, "romancy_postgres.py"),
)
DURABLE = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on"}


def configure(server: PostgresServer, **settings: str) -> dict[str, str]:
    """ALTER SYSTEM the settings, reload, and return what the server now reports."""
    with psycopg.connect(server.url, autocommit=True) as con:
        for name, value in settings.items():
            con.execute(f"ALTER SYSTEM SET {name} = {value}")
        con.execute("SELECT pg_reload_conf()")
        time.sleep(0.5)  # the postmaster signals every backend; new sessions see it at once
        names = (*DURABLE, "wal_sync_method", "server_version")
        return {n: str(con.execute(f"SHOW {n}").fetchone()[0]) for n in names}  # type: ignore[index]


def fresh_database(server: PostgresServer, name: str) -> str:
    """Create an empty database on the server; its URL."""
    with psycopg.connect(server.url, autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {name}")
        con.execute(f"CREATE DATABASE {name}")
    return server.url_for(name)


def floor(server: PostgresServer, n: int = 300) -> dict[str, float]:
    """µs per trivial INSERT (autocommit: a commit each), per SELECT 1, and per INSERT
    sent through a worker thread from asyncio, on one connection; and commits/s of 16
    connections at once."""
    url = fresh_database(server, "floor")
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("CREATE TABLE t (x integer)")
        for i in range(20):  # warm-up: connection, catalog caches
            con.execute("INSERT INTO t VALUES (%s)", (i,))
        t0 = time.perf_counter()
        for i in range(n):
            con.execute("INSERT INTO t VALUES (%s)", (i,))
        insert = (time.perf_counter() - t0) / n * 1e6
        t0 = time.perf_counter()
        for _ in range(n):
            con.execute("SELECT 1").fetchone()
        select = (time.perf_counter() - t0) / n * 1e6
        hop = asyncio.run(_insert_through_thread(con, n)) / n * 1e6
    return {
        "insert_us": insert,
        "select_us": select,
        "insert_via_thread_us": hop,
        "commits_per_s_16": _parallel_commits(url, 16, 50),
    }


def _parallel_commits(url: str, connections: int, each: int) -> float:
    """Commits/s of ``connections`` threads each INSERTing on its own connection: what the
    server's group commit (one WAL flush for the commits waiting together) allows."""
    cons = [psycopg.connect(url, autocommit=True) for _ in range(connections)]
    try:

        def insert(con: psycopg.Connection[Any]) -> None:
            for i in range(each):
                con.execute("INSERT INTO t VALUES (%s)", (i,))

        with ThreadPoolExecutor(connections) as threads:
            t0 = time.perf_counter()
            list(threads.map(insert, cons))
            return connections * each / (time.perf_counter() - t0)
    finally:
        for con in cons:
            con.close()


async def _insert_through_thread(con: psycopg.Connection[Any], n: int) -> float:
    """Seconds for n INSERTs sent from an event loop through one worker thread: how the
    engine calls a store that may block (engine/gate.py), without the engine."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1) as thread:
        t0 = time.perf_counter()
        for i in range(n):
            await loop.run_in_executor(thread, con.execute, "INSERT INTO t VALUES (%s)", (i,))
        return time.perf_counter() - t0


def run_peer(peer: Peer, url: str, args: argparse.Namespace, *extra: str) -> dict[str, Any]:
    """Run one peer's PostgreSQL script; its payload, or {"error": ...}."""
    try:
        python = ensure_venv(peer)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        return {"error": f"not installed: {exc}"}
    command = [str(python), str(BENCH / "workloads" / peer.script), "--url", url, *extra]
    command += ["--quick"] if args.quick else []
    print(f"running {peer.key} {' '.join(extra)} ...", flush=True)
    t0 = time.monotonic()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=args.timeout, cwd=BENCH / "workloads"
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_MARKER)]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        return {"error": f"exit {done.returncode}:\n{tail}"}
    payload: dict[str, Any] = json.loads(lines[-1][len(RESULT_MARKER) :])
    payload["seconds"] = time.monotonic() - t0
    return payload


def run_pass(server: PostgresServer, args: argparse.Namespace, mode: str) -> dict[str, Any]:
    """Every peer under one synchronous_commit setting, each after its own floor; then
    ``args.rounds - 1`` more per-step runs, the peers alternating, the best kept."""
    result: dict[str, Any] = {"settings": configure(server, synchronous_commit=mode)}
    extra = () if mode == "on" else ("--per-step-only",)
    for peer in PEERS:
        result[f"floor:{peer.key}"] = floor(server)
        url = fresh_database(server, f"{peer.key}_{mode}")
        result[peer.key] = run_peer(peer, url, args, *extra)
    for round_no in range(1, args.rounds):
        for peer in PEERS:
            measured = floor(server)
            url = fresh_database(server, f"{peer.key}_{mode}_{round_no}")
            keep_best(result, peer.key, measured, run_peer(peer, url, args, "--per-step-only"))
    return result


PER_STEP = ("per_step_us", "per_step_cpu_us", "per_step_fresh_s")


def keep_best(result: dict[str, Any], key: str, measured: dict[str, float], again: Any) -> None:
    """Keep the per-step figures of ``again`` (and the floor taken just before it) if its
    per-step overhead is lower than the peer's so far."""
    best = result[key]
    if "error" in again or "error" in best:
        return
    if again["figures"]["per_step_us"] < best["figures"]["per_step_us"]:
        best["figures"].update({k: again["figures"][k] for k in PER_STEP})
        result[f"floor:{key}"] = measured


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per peer run")
    p.add_argument("--rounds", type=int, default=3, help="per-step runs of each peer per "
                   "pass, alternating; the best is kept (default 3, 1 with --quick)")  # fmt: skip
    p.add_argument("--out", type=Path, help="file to splice the section into (default: "
                   "bench/RESULTS.md for a full run, none for --quick)")  # fmt: skip
    args = p.parse_args()
    if args.quick:
        args.rounds = 1
    facts = machine_facts()
    server = launch()
    try:
        facts["PostgreSQL"] = "settings " + json.dumps(configure(server, **DURABLE))
        passes = {mode: run_pass(server, args, mode) for mode in ("on", "off")}
    finally:
        server.remove()
    facts["load average after"] = f"{os.getloadavg()[0]:.2f}"
    section = render_section(passes, facts, quick=args.quick)
    print(section)
    out = args.out or (None if args.quick else BENCH / "RESULTS.md")
    if out:
        out.write_text(splice(out.read_text() if out.exists() else "", section))
        print(f"wrote the PostgreSQL section of {out}")
    failed = [k for run in passes.values() for k, v in run.items() if "error" in v]
    for key in failed:
        print(f"{key} did not run", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
