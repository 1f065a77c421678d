"""``romancy-nb run`` (nbclient, injected parameters) and ``worker --notebook``."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

import romancy_nb as rn
from romancy_nb.cli.notebook import definition_cells, inject_parameters, parse_parameters
from tests.notebooks.kernels import REPO, eventually, query

CELLS = [
    "%load_ext romancy_nb\nimport romancy_nb as rn",
    "n = 1\nwho = 'nobody'",
    "%%activity\ndef twice(ctx, x: int) -> int:\n    return 2 * x",
    "%%workflow\nasync def approval_flow(ctx, n: int) -> int:\n"
    "    event = await ctx.wait_event('go')\n"
    "    return await twice(ctx, n) + event.data['extra']",
    "iid = await rn.current_app().start(approval_flow, n, instance_id=f'run-{n}')\n"
    "print('started', iid, who)",
    "import asyncio\n"
    "while rn.current_app().get_instance(iid).status != 'waiting_for_event':\n"
    "    await asyncio.sleep(0.02)",
]


def write_notebook(folder: Path, cells: list[str], parameters_at: int | None = 1) -> Path:
    notebook = new_notebook(cells=[new_code_cell(source) for source in cells])
    if parameters_at is not None:
        notebook.cells[parameters_at].metadata["tags"] = ["parameters"]
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = folder / "flow.ipynb"
    nbformat.write(notebook, path)
    return path


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "romancy_nb.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def test_parameters_parse_as_json_or_text() -> None:
    assert parse_parameters(["n=3", "who=ann", "flags=[1, 2]", "on=true", 's="x"']) == {
        "n": 3,
        "who": "ann",
        "flags": [1, 2],
        "on": True,
        "s": "x",
    }


def test_parameters_cell_goes_after_the_tagged_cell() -> None:
    notebook = new_notebook(
        cells=[new_code_cell("a = 1"), new_code_cell("n = 1"), new_code_cell("print(n)")]
    )
    notebook.cells[1].metadata["tags"] = ["parameters"]
    inject_parameters(notebook, {"n": 5})
    assert notebook.cells[2].source.endswith("n = 5")
    assert notebook.cells[2].metadata["tags"] == ["injected-parameters"]


def test_worker_runs_definitions_only() -> None:
    notebook = new_notebook(
        cells=[
            new_code_cell(source)
            for source in [
                *CELLS,
                "%%workflow --start '{\"n\": 2}' --id x\nasync def other(ctx, n: int) -> int:\n"
                "    return n",
                "%romancy list",
                "%%sql\nSELECT 1",
            ]
        ]
    )
    notebook.cells[2].metadata["tags"] = ["skip-worker"]
    sources = definition_cells(notebook)
    assert sources[0] == "import romancy_nb as rn"  # the worker loads the extension itself
    assert sources[1] == CELLS[1]
    assert sources[2] == CELLS[3]
    assert sources[3].startswith("%%workflow\nasync def other")
    assert len(sources) == 4


def test_run_injects_parameters_and_writes_the_output(tmp_path: Path) -> None:
    path = write_notebook(tmp_path, CELLS)
    out = tmp_path / "out.ipynb"
    done = cli("run", str(path), "-p", "n=5", "-p", "who=ann", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "ok: " in done.stdout
    executed = nbformat.read(out, as_version=4)
    assert executed.cells[2].metadata["tags"] == ["injected-parameters"]
    printed = [
        o["text"]
        for c in executed.cells
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream"
    ]
    assert "started run-5 ann\n" in printed
    assert query(tmp_path / "romancy.db", "SELECT instance_id, status FROM workflow_instances") == [
        ("run-5", "waiting_for_event")
    ]


def test_run_reports_the_failing_cell(tmp_path: Path) -> None:
    path = write_notebook(tmp_path, ["x = 1", "y = x / 0", "print('never')"], parameters_at=None)
    done = cli("run", str(path))
    assert done.returncode == 1
    assert "code cell 2 of 3" in done.stderr
    assert "ZeroDivisionError" in done.stderr
    assert "y = x / 0" in done.stderr
    beside = tmp_path / "flow.nbconvert.ipynb"
    assert f"the executed notebook, outputs included: {beside}" in done.stderr
    outputs = nbformat.read(beside, as_version=4).cells[1].outputs
    assert [o["ename"] for o in outputs] == ["ZeroDivisionError"]


def test_run_without_output_writes_the_executed_notebook_beside_it(tmp_path: Path) -> None:
    path = write_notebook(tmp_path, ["print('hello')"], parameters_at=None)
    done = cli("run", str(path))
    assert done.returncode == 0, done.stderr
    beside = tmp_path / "flow.nbconvert.ipynb"
    assert f"executed notebook: {beside}" in done.stdout
    (cell,) = nbformat.read(beside, as_version=4).cells
    assert [o["text"] for o in cell.outputs] == ["hello\n"]
    assert "without encryption" not in done.stderr  # the kernel's TCP warning


def test_run_names_the_cell_that_timed_out(tmp_path: Path) -> None:
    cells = ["x = 1", "import time\ntime.sleep(600)", "print('never')"]
    path = write_notebook(tmp_path, cells, parameters_at=None)
    done = cli("run", str(path), "--timeout", "1")
    assert done.returncode == 1
    assert f"FAILED {path}: code cell 2 of 3 timed out after 1 s (--timeout)" in done.stderr
    assert "time.sleep(600)" in done.stderr
    assert (tmp_path / "flow.nbconvert.ipynb").exists()


def test_quickstart_runs_twice_headless_in_one_folder(tmp_path: Path) -> None:
    # As a user would: the second run finds o-1 and o-2 completed and runs nothing again.
    shutil.copy(REPO / "notebooks" / "quickstart.ipynb", tmp_path)
    for _ in range(2):
        done = cli("run", str(tmp_path / "quickstart.ipynb"))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"ok: {tmp_path / 'quickstart.ipynb'}")
    rows = query(tmp_path / "romancy.db", "SELECT order_id, count(*) FROM payments GROUP BY 1")
    assert sorted(rows) == [("o-1", 1), ("o-2", 1)]


def test_run_of_a_missing_notebook_exits_3(tmp_path: Path) -> None:
    done = cli("run", str(tmp_path / "nope.ipynb"))
    assert done.returncode == 3
    assert "no notebook" in done.stderr


def test_worker_serves_instances_after_the_kernel_is_gone(tmp_path: Path) -> None:
    path = write_notebook(tmp_path, CELLS)
    assert cli("run", str(path), "-p", "n=7").returncode == 0
    db = tmp_path / "romancy.db"
    assert query(db, "SELECT status FROM workflow_instances") == [("waiting_for_event",)]
    errors = tmp_path / "worker.err"
    worker = subprocess.Popen(
        [sys.executable, "-m", "romancy_nb.cli", "worker", "--notebook", str(path)],
        stdout=subprocess.PIPE,
        stderr=errors.open("w"),
        text=True,
        cwd=REPO,
    )
    lines: list[str] = []

    def read() -> None:
        assert worker.stdout is not None
        for line in worker.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        eventually(
            lambda: (
                any(" serving approval_flow " in line for line in lines)
                or worker.poll() is not None
            ),
            what="the worker to start serving",
        )
        assert worker.poll() is None, errors.read_text()

        async def send() -> None:
            async with rn.App(db) as app:
                await app.send_event("go", {"extra": 100})

        asyncio.run(send())
        eventually(
            lambda: (
                query(db, "SELECT status, output FROM workflow_instances") == [("completed", "114")]
            ),
            what="the worker to finish the instance",
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        reader.join(timeout=5)
    assert worker.returncode == 0, errors.read_text()
    assert any(line.startswith("stopped after") for line in lines)
    assert (
        json.loads(query(db, "SELECT output FROM workflow_history WHERE step_id = 'twice:1'")[0][0])
        == 14
    )
