"""The PostgreSQL section of RESULTS.md: bench/postgres.py writes it, bench/run.py keeps it.

The section lives between two markers at the end of the file, so each benchmark rewrites
only its own part: :func:`splice` replaces (or appends) it, and run.py passes its freshly
rendered SQLite report through :func:`carry` to keep the section of the previous file.
Ratios are *times better* for romancy_nb, as in report.py.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

BEGIN = "<!-- postgres: begin (bench/postgres.py writes this section) -->"
END = "<!-- postgres: end -->"


FLOORS = (
    ("insert_us", "one INSERT round trip, µs"),
    ("insert_via_thread_us", "the same INSERT sent through one thread from asyncio, µs"),
    ("select_us", "one SELECT 1 round trip, µs"),
    ("commits_per_s_16", "commits/s of 16 connections INSERTing at once (group commit)"),
)
"""The floors bench/postgres.py measures with psycopg (one connection, autocommit)."""


NOTES = """\
How each figure is taken (details in bench/postgres.py and each workload's docstring):

- **Server**: one private PostgreSQL (tests/postgres_server.py: initdb in a temporary
  folder, loopback TCP), switched to normal durability before anything runs — `fsync`,
  `full_page_writes` and `synchronous_commit` on (the settings line above is what the
  server reported). Each peer gets a fresh database on it; peers run one at a time, each
  in its bench/.venvs/ virtualenv; DBOS keeps its system database there (`dbos` schema).
- **Floor**, taken just before each peer: one psycopg connection in autocommit, a trivial
  `INSERT` per round trip (one commit, one WAL flush each); the same `INSERT` sent from
  an asyncio loop through one worker thread (how the engine calls a store that may
  block: engine/gate.py); a `SELECT 1` (a round trip without a commit); and the commits/s
  of 16 connections INSERTing at once from 16 threads (what the server's group commit
  gives a client that keeps several commits in flight).
- **Per-step overhead**: (best N-step workflow − best 0-step workflow) / N in one process
  (`rn.App(url)`; DBOS launched in the process, its synchronous idiom), no-op steps; CPU
  per step is the same difference of the process's CPU time (all its threads).
  romancy_nb records a step with one statement (an `INSERT … SELECT … WHERE` that checks
  the lease), one round trip and one commit: checked with `log_statement = all`. Each
  peer's per-step run is made three times (`--rounds`), the peers alternating, and the
  best is kept with the floor taken just before it: this VM's fsync latency varies
  several-fold from one minute to the next (a run saw the same INSERT take 1.3 ms before
  one peer and 0.27 ms before the other), and alternating gives both the same chances.
- **synchronous_commit=off**: the same per-step runs after `ALTER SYSTEM SET
  synchronous_commit = off` (commits stop waiting for the WAL flush; a server crash may
  lose the last commits, never consistency). It shows the cost that is not the disk's.
- **Workflows/s**: k worker processes (romancy_nb: `romancy-nb worker --app
  bench/workloads/romancy_postgres.py --db URL --max-concurrent 20`; DBOS: k processes
  serving one queue with `worker_concurrency = 20`, distinct executor ids, one
  application version, the queue polled every 10 ms instead of DBOS's default 1 s), all
  started and ready before the clock starts, warmed up with 4·k one-step workflows. A
  client (`rn.App(url, max_concurrent=0)`; `DBOSClient.enqueue`) starts the batch; the
  time runs from the first start to the latest completion time the store recorded
  (polled with one SQL query every 2 ms, the same for both), so how a client learns of
  results does not enter it.
- **Event wake-up**: the client starts instances that wait for an event (romancy_nb
  `ctx.wait_event`; DBOS `DBOS.recv`), one worker process runs them; for each in turn,
  once it waits (romancy_nb: status `waiting_for_event`, then 50 ms; DBOS shows no waiting
  status: PENDING, then 300 ms), the client sends (`send_event`; `DBOSClient.send`) and
  the resumed workflow returns its wall-clock time; latency = that − the time just
  before the send (one machine, one clock). DBOS on PostgreSQL wakes `recv` by
  LISTEN/NOTIFY, as romancy_nb does.
- **The machine**: 2 vCPUs shared with the PostgreSQL server, every worker process and
  the client, and with whatever else runs on the machine then (the load average
  before and after is in the machine line; above 2 the CPUs are oversubscribed and every
  round trip waits for a CPU). 4 worker processes contend with the server for 2 cores,
  so the 4-worker figures say more about the machine than about either framework. Read
  the ratios and the multiples of the floor rather than absolute values.
"""
"""Method and caveats, rendered under the table (a re-run rewrites the whole section)."""


def splice(text: str, section: str) -> str:
    """``text`` with its PostgreSQL section replaced by ``section`` (appended if absent)."""
    block = f"{BEGIN}\n{section.strip()}\n{END}\n"
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return text.rstrip("\n") + "\n\n" + block
    return text[:start] + block + text[end + len(END) :].lstrip("\n")


def carry(old: Path, new_text: str) -> str:
    """``new_text`` with the PostgreSQL section ``old`` holds, if any."""
    text = old.read_text() if old.exists() else ""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return new_text
    return splice(new_text, text[start + len(BEGIN) : end])


def _fmt(v: float | None) -> str:
    if v is None:
        return "—"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _fig(passes: dict[str, Any], mode: str, peer: str, key: str) -> float | None:
    value = passes.get(mode, {}).get(peer, {}).get("figures", {}).get(key)
    return None if value is None else float(value)


def _row(
    label: str,
    ours: float | None,
    theirs: float | None,
    *,
    lower: bool | None,
    target: str = "",
    meets: Callable[[float], bool] | None = None,
) -> str:
    cell = _fmt(ours)
    if ours is not None and meets is not None:
        cell += " ✓" if meets(ours) else " ✗"
    ratio = "—"
    if ours and theirs and lower is not None:
        ratio = f"×{_fmt(theirs / ours if lower else ours / theirs)}"
    return f"| {label} | {cell} | {_fmt(theirs)} | {ratio} | {target or '—'} |"


def table(passes: dict[str, Any]) -> list[str]:
    """The comparison table: floors, per-step, workflows/s per worker count, wake-ups."""
    lines = [
        "| figure | romancy_nb | DBOS 3.4 | romancy_nb × better | target |",
        "|---|---|---|---|---|",
    ]
    for mode, what in (("on", "synchronous_commit=on"), ("off", "synchronous_commit=off")):
        if mode not in passes:
            continue
        floors = {p: passes[mode].get(f"floor:{p}", {}) for p in ("romancy", "dbos")}
        for key, floor_label in FLOORS:
            lines.append(
                _row(
                    f"floor, {what}: {floor_label} (taken before each peer)",
                    floors["romancy"].get(key),
                    floors["dbos"].get(key),
                    lower=None,
                )
            )
        ours, theirs = (_fig(passes, mode, p, "per_step_us") for p in ("romancy", "dbos"))
        lines.append(
            _row(
                f"per-step overhead, {what} (µs)",
                ours,
                theirs,
                lower=True,
                target="≤ 500 µs, ≥ ×10 DBOS" if mode == "on" else "",
                meets=(lambda v: v <= 500) if mode == "on" else None,
            )
        )
        multiples = [
            None if v is None or not floors[p].get("insert_us") else v / floors[p]["insert_us"]
            for p, v in (("romancy", ours), ("dbos", theirs))
        ]
        lines.append(_row(f"per step ÷ floor, {what} (× one INSERT)", *multiples, lower=True))
        cpu = [_fig(passes, mode, p, "per_step_cpu_us") for p in ("romancy", "dbos")]
        lines.append(_row(f"CPU per step, {what} (µs, the peer's process)", *cpu, lower=True))
    sizes = next(
        (p["sizes"] for p in passes.get("on", {}).values() if isinstance(p, dict) and "sizes" in p),
        {},
    )
    for k in sizes.get("workers", ()):
        lines.append(
            _row(
                f"{sizes['n_workflows']} workflows × {sizes['wf_steps']} steps, {k} worker "
                f"process{'es' if k > 1 else ''} (wf/s)",
                _fig(passes, "on", "romancy", f"wf_per_s_{k}w"),
                _fig(passes, "on", "dbos", f"wf_per_s_{k}w"),
                lower=False,
                target="grows from 1 to 2" if k == 2 else "",
            )
        )
    for q, target in (("p50", "≤ 10 ms"), ("p90", "")):
        lines.append(
            _row(
                f"event → resumed in another process, {q} (ms)",
                _fig(passes, "on", "romancy", f"xproc_event_ms_{q}"),
                _fig(passes, "on", "dbos", f"xproc_event_ms_{q}"),
                lower=True,
                target=target,
                meets=(lambda v: v <= 10) if q == "p50" else None,
            )
        )
    return lines


def render_section(passes: dict[str, Any], facts: dict[str, str], *, quick: bool) -> str:
    """The whole PostgreSQL section: heading, machine, table, failures, raw figures."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    errors = [
        f"- **{peer}** ({mode}) did not run: `{(v['error'] or '?').splitlines()[-1]}`"
        for mode, run in passes.items()
        for peer, v in run.items()
        if isinstance(v, dict) and "error" in v
    ]
    raw = json.dumps(passes, indent=1, default=str)
    return "\n".join(
        [
            "## PostgreSQL: romancy_nb vs DBOS 3.4, one server",
            "",
            f"Run {now} by `python bench/postgres.py{' --quick' if quick else ''}`.",
            "",
            "Machine: " + "; ".join(f"{k} {v}" for k, v in facts.items()) + ".",
            "",
            *table(passes),
            "",
            NOTES,
            *errors,
            *([""] if errors else []),
            "<details><summary>raw PostgreSQL figures (JSON)</summary>",
            "",
            "```json",
            raw,
            "```",
            "",
            "</details>",
        ]
    )
