"""Notebook views: how long a 100,000-step history takes to load into a DataFrame.

Run with ``python bench/workloads/notebook_views.py [--steps N] [--repeats R]``. The history
is written in one transaction straight into a fresh database (the write path is measured
elsewhere); the figure is ``rn.history(iid)`` — read, typed timestamps, JSON decoded — and,
for comparison, the raw read alone and ``%%sql`` (DuckDB) aggregating the same table.
Prints one ``BENCH_RESULT {json}`` line, like the other workloads.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import romancy_nb as rn
from romancy_nb.notebook.sql import run_sql


def build(db: Path, steps: int) -> rn.App:
    app = rn.App(db)
    app.store.migrate()
    connection = app.store.connection
    now = time.time()
    with connection:
        connection.execute(
            "INSERT INTO workflow_instances (instance_id, workflow_name, status, input, "
            "created_at, updated_at) VALUES ('big', 'big_flow', 'completed', '{}', ?, ?)",
            (now, now),
        )
        connection.executemany(
            "INSERT INTO workflow_history (instance_id, seq, step_id, kind, name, status, "
            "input, output, error, attempts, started_at, finished_at) "
            "VALUES ('big', ?, ?, 'activity', 'step', 'completed', ?, ?, NULL, 1, ?, ?)",
            (
                (
                    i,
                    f"step:{i}",
                    f"[{i}]",
                    json.dumps({"value": i, "text": "x" * 20}),
                    now + i * 1e-4,
                    now + i * 1e-4 + 5e-5,
                )
                for i in range(1, steps + 1)
            ),
        )
    return app


def best(repeats: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app = build(Path(tmp) / "views.db", options.steps)
        frame = rn.history("big", app=app)
        assert len(frame) == options.steps and frame["output"][0]["value"] == 1
        result = {
            "steps": options.steps,
            "history_dataframe_s": best(options.repeats, lambda: rn.history("big", app=app)),
            "raw_read_s": best(options.repeats, lambda: app.store.read_table("workflow_history")),
            "sql_group_by_s": best(
                options.repeats,
                lambda: run_sql("SELECT status, count(*) FROM history GROUP BY status", app),
            ),
        }
        app.store.close()
    for key, value in result.items():
        print(f"{key:>22}: {value:.3f}" if isinstance(value, float) else f"{key:>22}: {value}")
    print("BENCH_RESULT " + json.dumps({"workload": "notebook_views", **result}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
