"""Helpers shared by every peer's workload script.

Stdlib only: each script runs inside its own virtualenv (DBOS, Edda, romancy_nb), so
this module must import nothing that one of those venvs might lack. It fixes the
workload sizes in one place so that every framework runs exactly the same work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sqlite3
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULT_MARKER = "BENCH_RESULT "


@dataclass(frozen=True)
class Sizes:
    """How much work each figure does; --quick shrinks it for a smoke test."""

    per_step_n: int = 1000  # steps of the fresh workflow (total time, and per step)
    n_workflows: int = 200  # workflows in the sequential / concurrent runs
    wf_steps: int = 10  # steps in each of those workflows
    replay_n: int = 1000  # recorded steps replayed
    memory_n: int = 10_000  # steps in the peak-memory workflow
    repeats: int = 3  # fresh and replay runs are repeated; the best one counts (least noise)


QUICK = Sizes(per_step_n=200, n_workflows=40, wf_steps=10, replay_n=200, memory_n=500, repeats=1)


def parse_args(extra: dict[str, dict[str, Any]] | None = None) -> argparse.Namespace:
    """Parse the flags every workload script takes (plus script-specific ones)."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--db-dir", required=True, type=Path, help="empty directory for the database")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    for name, kw in (extra or {}).items():
        p.add_argument(name, **kw)
    args = p.parse_args()
    args.db_dir.mkdir(parents=True, exist_ok=True)
    args.sizes = QUICK if args.quick else Sizes()
    return args


def now() -> float:
    """Monotonic high-resolution clock, in seconds."""
    return time.perf_counter()


def current_rss() -> int:
    """Resident set size of this process now, in bytes (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def file_pragmas(db_path: Path) -> dict[str, str]:
    """The journal mode persisted in a database file (WAL is sticky, others are not)."""
    con = sqlite3.connect(db_path)
    try:
        return {"journal_mode_in_file": con.execute("PRAGMA journal_mode").fetchone()[0]}
    finally:
        con.close()


def emit(framework: str, version: str, figures: dict[str, float], **info: Any) -> None:
    """Print the one JSON line the orchestrator reads; anything else on stdout is ignored."""
    payload = {
        "framework": framework,
        "version": version,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "executable": sys.executable,
        "sizes": asdict(QUICK if info.pop("quick", False) else Sizes()),
        "figures": figures,
        **info,
    }
    sys.stdout.flush()
    print(RESULT_MARKER + json.dumps(payload), flush=True)


def best_of(runs: list[dict[str, float]], key: str) -> dict[str, float]:
    """The run with the smallest `key`: the least disturbed by the rest of the machine."""
    return min(runs, key=lambda r: r[key])
