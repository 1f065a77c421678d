"""``romancy-nb worker --app``: serving a client's instances, ``--max-concurrent``, SIGTERM
within ``--grace``, and its usage errors. On every backend (``store_url``).

The workers are real processes (``tests/processes.py``) serving ``worker_flows``; the test
is the client (``max_concurrent=0``: it stores instances and reads results, running none).
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import romancy_nb as rn
from romancy_nb.store import open_store
from romancy_nb.testing import eventually
from tests.conftest import TableReader
from tests.edges.worker_flows import SPANS, gated, spans
from tests.processes import REPO, WorkerProcess

APP = "tests.edges.worker_app:app"
MODULE = "tests.edges.worker_flows"


def _worker(store_url: str, tmp_path: Path, name: str, *args: str) -> WorkerProcess:
    """``romancy-nb worker ARGS`` on the test's database (``$ROMANCY_DB``: the worker's
    default ``--db``, and the database of ``worker_app:app``)."""
    return WorkerProcess(args, tmp_path, name, env={"ROMANCY_DB": store_url})


def _client(store_url: str) -> rn.App:
    return rn.App(store_url, max_concurrent=0, sweep_interval=0.2)


@pytest.mark.parametrize(
    "args", [["--app", APP], ["--app", MODULE, "--db", "{db}"]], ids=["module:app", "module"]
)
async def test_the_worker_serves_a_clients_instances(
    store_url: str, table_rows: TableReader, tmp_path: Path, args: list[str]
) -> None:
    worker = _worker(store_url, tmp_path, "worker", *[a.format(db=store_url) for a in args])
    try:
        worker_id = worker.serving()
        assert f"serving cli_worker_gated, cli_worker_spans on {store_url}" in worker.stdout()
        async with _client(store_url) as client:
            ids = [await client.start(spans, 2, 0.0) for _ in range(5)]
            assert [await client.result(iid, timeout=120) for iid in ids] == [2] * 5
            assert {client.get_instance(iid).lock_owner for iid in ids} == {None}
            assert client.running() == []
        rows = table_rows(SPANS)
        assert sorted((iid, step) for iid, step, _, _ in rows) == sorted(
            (iid, f"cli_worker_span:{n}") for iid in ids for n in (1, 2)
        )
        assert worker.terminate() == 0, worker.output()
        assert "stopped after" in worker.stdout()
        store = open_store(store_url)
        try:  # a clean stop removes the worker's registration
            assert worker_id not in {w.worker_id for w in store.list_workers()}
        finally:
            store.close()
    finally:
        worker.kill()


@pytest.mark.parametrize("limit", ["1", None], ids=["max-concurrent-1", "no-limit"])
async def test_max_concurrent_1_never_runs_two_instances_at_once(
    store_url: str, table_rows: TableReader, tmp_path: Path, limit: str | None
) -> None:
    """Each step records when it ran: with ``--max-concurrent 1`` one instance's steps all
    end before the next instance's begin. Without a limit the same workload overlaps (so
    the check is one that can fail)."""
    options = ["--max-concurrent", limit] if limit else []
    worker = _worker(store_url, tmp_path, "worker", "--app", MODULE, *options)
    try:
        worker.serving()
        async with _client(store_url) as client:
            ids = [await client.start(spans, 3, 0.05) for _ in range(4)]
            for iid in ids:
                await client.result(iid, timeout=120)
    finally:
        worker.kill()
    runs: dict[str, tuple[float, float]] = {}
    for iid, _, began, ended in table_rows(SPANS):
        first, last = runs.get(iid, (began, ended))
        runs[iid] = (min(first, began), max(last, ended))
    assert sorted(runs) == sorted(ids)
    ordered = sorted(runs.values())
    overlaps = [(a, b) for a, b in itertools.pairwise(ordered) if b[0] < a[1]]
    if limit:
        assert overlaps == [], "two instances ran at once"
    else:
        assert overlaps, "the unlimited worker ran the instances one by one"


async def test_sigterm_lets_the_run_finish_within_the_grace(store_url: str, tmp_path: Path) -> None:
    worker = _worker(store_url, tmp_path, "worker", "--app", APP, "--grace", "300")
    attempts = tmp_path / "attempts"
    try:
        worker.serving()
        async with _client(store_url) as client:
            iid = await client.start(gated, str(tmp_path))
            await eventually(attempts.exists, timeout=120, message="the activity to start")
            worker.process.terminate()
            await eventually(
                lambda: "draining: 1 run(s), up to 300 s" in worker.stdout(),
                timeout=120,
                message="the worker to drain",
            )
            assert worker.alive()  # it waits for the run: it has not stopped
            (tmp_path / "release").touch()
            assert worker.wait() == 0, worker.output()
            assert client.get_instance(iid).status == "completed"
            assert await client.result(iid) == "released"
    finally:
        worker.kill()
    assert "releasing" not in worker.stdout()
    assert attempts.read_text().splitlines() == ["cli_worker_gate:1"]


async def test_sigterm_with_no_grace_releases_the_run_to_another_worker(
    store_url: str, tmp_path: Path
) -> None:
    first = _worker(store_url, tmp_path, "first", "--app", APP, "--grace", "0")
    second: WorkerProcess | None = None
    attempts = tmp_path / "attempts"
    try:
        first.serving()
        async with _client(store_url) as client:
            iid = await client.start(gated, str(tmp_path))
            await eventually(attempts.exists, timeout=120, message="the activity to start")
            assert first.terminate() == 0, first.output()
            assert "releasing 1 unfinished run(s) to other workers" in first.stdout()
            released = client.get_instance(iid)
            assert (released.status, released.lock_owner) == ("running", None)

            second = _worker(store_url, tmp_path, "second", "--app", APP)
            await eventually(
                lambda: len(attempts.read_text().splitlines()) == 2,
                timeout=120,
                message="the second worker to run the activity again",
            )
            (tmp_path / "release").touch()
            assert await client.result(iid, timeout=120) == "released"
            steps = [(s.step_id, s.status) for s in client.get_history(iid)]
            assert steps == [("cli_worker_gate:1", "completed")]
        assert second.terminate() == 0, second.output()
    finally:
        first.kill()
        if second is not None:
            second.kill()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give exactly one of --app MODULE[:APP] and --notebook NB"),
        (["--app", APP, "--notebook", "flow.ipynb"], "give exactly one of --app"),
        (["--app", ":app"], "--app :app: give a module, e.g. --app flows:app"),
        (
            ["--app", "tests.edges.worker_app:missing"],
            "tests.edges.worker_app.missing is missing, not an rn.App",
        ),
        (
            ["--app", "tests.edges.worker_app:not_an_app"],
            "tests.edges.worker_app.not_an_app is a str, not an rn.App",
        ),
        (["--app", "tests.edges.no_such_module"], "no module named 'tests.edges.no_such_module'"),
    ],
    ids=["neither", "both", "no-module", "missing-attribute", "not-an-app", "missing-module"],
)
def test_usage_errors_exit_2_with_a_clear_message(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "romancy_nb.cli", "worker", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "ROMANCY_DB": str(tmp_path / "romancy.db"), "COLUMNS": "200"},
    )
    assert done.returncode == 2, done.stderr
    said = re.sub(r"\s+", " ", done.stderr)
    assert message in said
    assert "Traceback" not in done.stderr
    assert "serving" not in done.stdout
