"""Every notebook in notebooks/ runs top to bottom in a real kernel (nbclient) — and again.

Users run an example twice (they change a cell, they come back the next day) in the same
folder, on the same ``romancy.db``, next to the other examples' instances: each notebook is
executed twice in a row in one folder, and all of them one after another in another.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.notebooks.kernels import REPO

# Not the executed copies `romancy-nb run` writes beside them (git ignores those too).
NOTEBOOKS = sorted(
    path
    for path in (REPO / "notebooks").glob("*.ipynb")
    if not path.name.endswith(".nbconvert.ipynb")
)


def test_there_are_notebooks() -> None:
    assert any(path.name == "quickstart.ipynb" for path in NOTEBOOKS)


def copy_examples(folder: Path) -> None:
    """The notebooks and the modules beside them (the stand-in model server)."""
    for path in [*NOTEBOOKS, *(REPO / "notebooks").glob("*.py")]:
        shutil.copy(path, folder / path.name)


def execute(folder: Path, name: str) -> None:
    """Run ``folder/name`` in a fresh kernel started in ``folder``.

    The first cell that raises stops the run with a ``CellExecutionError`` that shows the
    cell and its traceback.
    """
    notebook = nbformat.read(folder / name, as_version=4)
    client = NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    client.execute()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_twice_on_the_same_database(path: Path, tmp_path: Path) -> None:
    copy_examples(tmp_path)
    execute(tmp_path, path.name)
    assert (tmp_path / "romancy.db").exists()
    execute(tmp_path, path.name)  # its instances exist now: found, not run again


def test_notebooks_share_one_database(tmp_path: Path) -> None:
    # Each one's instances, workflow names and events stay out of the others' way.
    copy_examples(tmp_path)
    for path in NOTEBOOKS:
        execute(tmp_path, path.name)
    execute(tmp_path, NOTEBOOKS[0].name)
