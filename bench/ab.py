"""Before/after: the romancy_nb workloads on two checkouts, alternated in one sitting.

Load on this 2-core machine moves single figures by ±30 %, so a regression check compares
two trees run turn about, several rounds, and reports each figure's median per tree:

    python bench/ab.py --before /path/to/old/checkout            # 3 rounds, NORMAL and FULL
    python bench/ab.py --before ../old --rounds 5 --quick

The "after" tree is this checkout. Each run is bench/workloads/romancy_bench.py of *this*
checkout with PYTHONPATH pointing at the tree under test, on a fresh temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH / "workloads"))
from common import RESULT_MARKER  # noqa: E402

FIGURES = ("per_step_us", "seq_wf_per_s", "conc_wf_per_s", "replay_s")


def run_once(tree: Path, synchronous: str, quick: bool) -> dict[str, float]:
    """One run of the romancy workloads against ``tree``; its figures."""
    with tempfile.TemporaryDirectory(prefix="romancy-ab-") as folder:
        command = [
            sys.executable,
            str(BENCH / "workloads" / "romancy_bench.py"),
            "--db-dir",
            folder,
            "--synchronous",
            synchronous,
            *(["--quick"] if quick else []),
        ]
        env = {**os.environ, "PYTHONPATH": str(tree)}
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            return dict(json.loads(line[len(RESULT_MARKER) :])["figures"])
    raise RuntimeError(f"no result from {tree}: {out.stderr[-2000:]}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--before", type=Path, required=True, help="checkout to compare against")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--modes", default="NORMAL,FULL")
    args = p.parse_args()
    trees = {"before": args.before.resolve(), "after": ROOT}
    for mode in args.modes.split(","):
        runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
        for n in range(args.rounds):
            for name in ("before", "after") if n % 2 == 0 else ("after", "before"):
                runs[name].append(run_once(trees[name], mode, args.quick))
                print(f"{mode} round {n + 1} {name}: done", file=sys.stderr)
        print(f"\n{mode} (median of {args.rounds} alternated rounds)")
        print(f"{'figure':<16}{'before':>12}{'after':>12}{'after/before':>14}")
        for figure in FIGURES:
            before = statistics.median(r[figure] for r in runs["before"])
            after = statistics.median(r[figure] for r in runs["after"])
            print(f"{figure:<16}{before:>12.4g}{after:>12.4g}{after / before:>14.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
