"""``romancy-nb worker --notebook`` and ``run -p``: what runs, what is said, what is injected.

The worker runs a notebook's definitions in its own process, so what it leaves out matters:
a plain cell's ``!shell`` line must not run there, and a cell that ends the process must be
named. ``run -p`` values must be valid source in the kernel, NaN and infinities included.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from romancy_nb.cli.notebook import definitions, inject_parameters, parse_parameters

REPO = Path(__file__).resolve().parents[2]

WORKFLOW = "%%workflow\nasync def nb_edge_flow(ctx, n: int) -> int:\n    return n"


def write_notebook(folder: Path, cells: list[str], parameters_at: int | None = None) -> Path:
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


def notebook_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "romancy_nb.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


DURATION = ("--duration", "0.1")


def worker(path: Path) -> subprocess.CompletedProcess[str]:
    """A worker that loads ``path``'s definitions and stops at once (it serves for 0.1 s)."""
    return subprocess.run(
        [sys.executable, "-m", "romancy_nb.cli", "worker", "--notebook", str(path), *DURATION],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


# IPython syntax in plain cells


def test_the_worker_does_not_run_shell_lines_of_plain_cells(tmp_path: Path) -> None:
    path = write_notebook(
        tmp_path,
        ["%load_ext romancy_nb\nimport romancy_nb as rn", "!touch marker\nn = 1", WORKFLOW],
    )
    done = worker(path)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "marker").exists()
    assert "code cell 2: skipped, a shell escape (!): touch marker" in done.stderr
    assert "serving nb_edge_flow" in done.stdout


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("!touch marker", "a shell escape (!): touch marker"),
        ("files = !ls\nn = 1", "a shell escape (!): ls"),
        ("x = 1\nx?", "a line magic (%): pinfo"),
        ("??x", "a line magic (%): pinfo2"),
        ("%time n = 1", "a line magic (%): time"),
        ("if True:\n    %time n = 1", "a line magic (%): time"),
        ("%%bash\ntouch marker", "a cell magic (%%): bash"),
        ("%load_ext romancy_nb\n!touch marker", "a shell escape (!): touch marker"),
        ("await something()", "top-level await"),
    ],
)
def test_ipython_syntax_is_read_by_ipython_and_left_out(source: str, why: str) -> None:
    notebook = new_notebook(cells=[new_code_cell(source)])
    assert definitions(notebook) == [(1, None, why)]


def test_definitions_and_plain_python_are_kept() -> None:
    notebook = new_notebook(
        cells=[
            new_code_cell("%load_ext romancy_nb\nimport romancy_nb as rn\n%load_ext romancy_nb"),
            new_code_cell("%load_ext romancy_nb"),
            new_code_cell("text = 'not !a shell line'\nn = 1"),
            new_code_cell("%%workflow --start '{\"n\": 2}' --id x\n" + WORKFLOW.split("\n", 1)[1]),
        ]
    )
    assert definitions(notebook) == [
        (1, "import romancy_nb as rn", None),
        (3, "text = 'not !a shell line'\nn = 1", None),
        (4, WORKFLOW, None),
    ]


# a definition cell that ends the process


def test_a_cell_that_ends_the_worker_process_is_named(tmp_path: Path) -> None:
    path = write_notebook(tmp_path, ["n = 1", WORKFLOW, "import os\nos._exit(1)", "m = 2"])
    done = worker(path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"{path}, code cell 3: loading"
    assert "serving" not in done.stdout


def test_a_cell_that_raises_system_exit_is_named_with_its_error(tmp_path: Path) -> None:
    path = write_notebook(tmp_path, ["n = 1", "raise SystemExit(4)", WORKFLOW])
    done = worker(path)
    assert done.returncode == 1
    assert f"{path}, code cell 2 failed: SystemExit: 4" in done.stderr
    assert "raise SystemExit(4)" in done.stderr


# run -p values


def test_parameters_that_are_not_finite_floats_are_valid_python() -> None:
    parameters = parse_parameters(["x=NaN", "y=-Infinity", "z=[Infinity, 1.5]", "s=it's"])
    notebook = new_notebook(cells=[new_code_cell("pass")])
    notebook.metadata["kernelspec"] = {"name": "python3", "language": "python"}
    inject_parameters(notebook, parameters)
    namespace: dict[str, object] = {}
    exec(notebook.cells[0].source, namespace)
    x, y, z, s = (namespace[k] for k in "xyzs")
    assert x != x and y == float("-inf") and z == [float("inf"), 1.5] and s == "it's"


def test_run_injects_nan_and_infinity_into_a_real_kernel(tmp_path: Path) -> None:
    path = write_notebook(
        tmp_path,
        ["x = 0.0\ny = 0.0", "assert x != x, x\nassert y == float('inf'), y"],
        parameters_at=0,
    )
    done = notebook_cli("run", str(path), "-p", "x=NaN", "-p", "y=Infinity")
    assert done.returncode == 0, done.stderr
    assert "ok: " in done.stdout


def test_run_gives_the_kernel_the_global_database(tmp_path: Path) -> None:
    path = write_notebook(
        tmp_path,
        [
            "%load_ext romancy_nb",
            WORKFLOW,
            "import romancy_nb as rn\napp = rn.current_app()\n"
            "assert await app.result(await app.start(nb_edge_flow, 5)) == 5",
        ],
    )
    database = tmp_path / "elsewhere" / "runs.db"
    database.parent.mkdir()
    done = notebook_cli("--db", str(database), "run", str(path))
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "romancy.db").exists()
    done = notebook_cli("list", "--db", str(database), "--json")
    assert done.returncode == 0, done.stderr
    assert '"nb_edge_flow"' in done.stdout
