"""Run the same durable-execution workloads on romancy_nb, DBOS and Edda; compare them.

Each peer runs in its own virtualenv under bench/.venvs/ (created here on first use,
reused after), as a subprocess that prints one JSON line of figures, on a fresh SQLite
file in a fresh temporary directory. Peers run one after another, never side by side,
so they do not share the machine's two cores. The table shows every figure and how many
times better romancy_nb is (>1 = romancy_nb better) in both of its durability modes.

    python bench/run.py            # full sizes; writes bench/RESULTS.md
    python bench/run.py --quick    # smoke test, < 2 minutes once the venvs exist
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENVS = BENCH / ".venvs"
sys.path[:0] = [str(BENCH), str(BENCH / "workloads")]
from common import RESULT_MARKER  # noqa: E402
from pg_report import carry  # noqa: E402
from report import render_markdown, render_terminal  # noqa: E402


@dataclass(frozen=True)
class Peer:
    """One column of the table: which venv, which requirements, which script."""

    key: str
    venv: str
    requirements: tuple[str, ...]
    script: str
    args: tuple[str, ...] = ()


ROMANCY_REQ = ("-e", f"{ROOT}[postgres]")  # psycopg too, for bench/postgres.py
PEERS = (
    Peer("dbos", "dbos", ("dbos==3.4.0",), "dbos_bench.py"),
    Peer("edda", "edda", ("edda-framework==0.16.2",), "edda_bench.py"),
    Peer("romancy-NORMAL", "romancy", ROMANCY_REQ, "romancy_bench.py", ("--synchronous", "NORMAL")),
    Peer("romancy-FULL", "romancy", ROMANCY_REQ, "romancy_bench.py", ("--synchronous", "FULL")),
)


@dataclass
class Outcome:
    """What one peer run produced: its JSON payload, or why there is none."""

    peer: Peer
    payload: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def key(self) -> str:
        """The peer's column key, as report.py looks it up."""
        return self.peer.key


def _stamp(peer: Peer) -> str:
    """What the venv was built from; a change (a new pin, a new pyproject) rebuilds it."""
    text = " ".join(peer.requirements)
    if peer.requirements == ROMANCY_REQ:
        text += hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return text


def ensure_venv(peer: Peer) -> Path:
    """Create bench/.venvs/<name> and install the peer's pinned requirements, once."""
    if peer.requirements == ROMANCY_REQ and not (ROOT / "pyproject.toml").exists():
        raise RuntimeError("romancy_nb has no pyproject.toml yet, so it cannot be installed")
    venv = VENVS / peer.venv
    python = venv / "bin" / "python"
    marker = venv / ".bench-stamp"
    if python.exists() and marker.exists() and marker.read_text() == _stamp(peer):
        return python
    if not python.exists():
        print(f"creating {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    print(f"installing {' '.join(peer.requirements)} into {venv} ...", flush=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    done = subprocess.run([*pip, *peer.requirements], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pip failed:\n{done.stderr[-2000:]}")
    marker.write_text(_stamp(peer))
    return python


def run_peer(peer: Peer, quick: bool, timeout: float) -> Outcome:
    """Run one peer's script on a fresh temporary database; parse its JSON line."""
    try:
        python = ensure_venv(peer)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        return Outcome(peer, error=f"not installed: {exc}")
    with tempfile.TemporaryDirectory(prefix=f"bench-{peer.key}-") as tmp:
        cmd = [str(python), str(BENCH / "workloads" / peer.script), "--db-dir", tmp]
        cmd += [*peer.args, *(["--quick"] if quick else [])]
        print(f"running {peer.key} ...", flush=True)
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Outcome(peer, error=f"timed out after {timeout:.0f} s")
        seconds = time.monotonic() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARKER)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-12:])
        return Outcome(peer, error=f"exit {proc.returncode}:\n{tail}", seconds=seconds)
    return Outcome(peer, payload=json.loads(lines[-1][len(RESULT_MARKER) :]), seconds=seconds)


def machine_facts() -> dict[str, str]:
    """What the figures depend on: cores, CPU, memory, kernel, filesystem of the temp dir."""
    facts = {
        "nproc": str(os.cpu_count()),
        "python (orchestrator)": platform.python_version(),
        "kernel": platform.release(),
        "romancy_nb source": _git_rev(),
        "load average before": f"{os.getloadavg()[0]:.2f}",
    }
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        facts["cpu"] = next(
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.splitlines()
            if ln.startswith("model name")
        )
        mem = next(
            ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")
        )
        facts["memory"] = f"{int(mem.split()[1]) / 2**20:.1f} GiB"
        facts["temp dir filesystem"] = _fs_type(Path(tempfile.gettempdir()))
        facts["SQLite commit (stdlib sqlite3)"] = commit_floor()
    except (OSError, StopIteration):
        pass
    return facts


def commit_floor(n: int = 200) -> str:
    """µs per one-row SQLite commit in each durability mode: the floor every peer pays.

    A noisy virtual disk moves every figure; this line says how fast fsync was today.
    """
    import sqlite3

    out = []
    modes = (("DELETE", "FULL"), ("WAL", "FULL"), ("WAL", "NORMAL"))
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        for journal, sync in modes:
            con = sqlite3.connect(Path(tmp) / f"{journal}{sync}.db", isolation_level=None)
            con.execute(f"PRAGMA journal_mode={journal}").fetchall()
            con.execute(f"PRAGMA synchronous={sync}")
            con.execute("CREATE TABLE t (x INTEGER)")
            t0 = time.perf_counter()
            for i in range(n):
                con.execute("INSERT INTO t VALUES (?)", (i,))
            out.append(f"{journal}+{sync} {(time.perf_counter() - t0) / n * 1e6:,.0f} µs")
            con.close()
    return ", ".join(out)


def _git_rev() -> str:
    """The commit romancy_nb was measured at (it changes often; figures age with it)."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "romancy_nb"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return f"commit {rev}" + (" + uncommitted changes" if dirty else "")


def _fs_type(path: Path) -> str:
    """Filesystem type of the mount holding path (tmpfs would make fsync free)."""
    best, kind = "", "?"
    for line in Path("/proc/mounts").read_text().splitlines():
        _dev, mount, fstype, *_ = line.split()
        if str(path.resolve()).startswith(mount) and len(mount) > len(best):
            best, kind = mount, fstype
    return f"{kind} ({best})"


def main() -> int:
    """Parse flags, run the selected peers in turn, print the table, write RESULTS.md."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    p.add_argument(
        "--only", default="", help="comma-separated peers: " + ",".join(x.key for x in PEERS)
    )
    p.add_argument(
        "--out",
        type=Path,
        help="markdown report (default: bench/RESULTS.md, only for a full run of every peer)",
    )
    p.add_argument("--timeout", type=float, help="seconds per peer (default 300 quick, 2400)")
    args = p.parse_args()
    wanted = {k.strip() for k in args.only.split(",") if k.strip()}
    unknown = wanted - {x.key for x in PEERS}
    if unknown:
        p.error(f"unknown peer(s): {', '.join(sorted(unknown))}")
    timeout = args.timeout or (300.0 if args.quick else 2400.0)
    facts = machine_facts()  # before the peers, while the disk is quiet
    outcomes = [run_peer(x, args.quick, timeout) for x in PEERS if not wanted or x.key in wanted]
    for o in outcomes:
        if o.error:
            print(f"\n{o.peer.key} did not run: {o.error}", file=sys.stderr)
    facts["load average after"] = f"{os.getloadavg()[0]:.2f}"
    render_terminal(outcomes, facts)
    out = args.out or (BENCH / "RESULTS.md" if not args.quick and not wanted else None)
    if out:
        # the PostgreSQL section is bench/postgres.py's: keep it
        out.write_text(carry(out, render_markdown(outcomes, facts, quick=args.quick)))
        print(f"wrote {out}")
    return 0 if all(o.payload for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
