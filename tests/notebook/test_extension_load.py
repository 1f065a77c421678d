"""``%load_ext romancy_nb`` creates no file: the default app comes at its first use.

Each scenario runs in a fresh Python process with a real IPython shell, so no workflow
defined by another test is registered (one defined opens the app: see the last test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    results = []
    for cell in json.loads(sys.argv[1]):
        outcome = shell.run_cell(cell)
        error = outcome.error_before_exec or outcome.error_in_exec
        if error is not None:
            raise SystemExit(f"cell failed: {error!r}\\n{cell}")
        results.append(repr(outcome.result))
    print(json.dumps(results))
    """
)


def shell(folder: Path, *cells: str) -> list[Any]:
    """Run ``cells`` in a new IPython shell in ``folder``; the repr of each cell's result."""
    env = {key: value for key, value in os.environ.items() if key != "ROMANCY_DB"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(cells)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout.splitlines()[-1]))


def files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_loading_the_extension_creates_no_database(tmp_path: Path) -> None:
    shell(tmp_path, "%load_ext romancy_nb", "%romancy config")
    assert files(tmp_path) == []


def test_config_right_after_loading_binds_the_app_and_leaves_no_stray_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "data").mkdir()
    other = tmp_path / "data" / "other.db"
    _, shown, _, url, is_open = shell(
        tmp_path,
        "%load_ext romancy_nb",
        "%romancy config",
        f"%romancy config --db {other}",
        "import romancy_nb as rn\nrn.current_app().url",
        "rn.current_app().is_open",
    )
    assert shown == repr({"db": str(tmp_path / "romancy.db")})
    assert url == repr(str(other))
    assert is_open == "True"
    assert "romancy.db" not in files(tmp_path)
    assert other.exists()


def test_first_use_creates_and_opens_the_default_app(tmp_path: Path) -> None:
    before, url, is_open = shell(
        tmp_path,
        "%load_ext romancy_nb\nimport os\nos.listdir('.')",
        "import romancy_nb as rn\nrn.current_app().url",
        "rn.current_app().is_open",
    )
    assert before == "[]"
    assert url == repr(str(tmp_path / "romancy.db"))
    assert is_open == "True"
    assert (tmp_path / "romancy.db").exists()


@pytest.mark.parametrize(
    "definition",
    [
        "%%workflow\nasync def hello(ctx) -> str:\n    return 'hi'",
        "import romancy_nb as rn\n@rn.workflow\nasync def hello(ctx) -> str:\n    return 'hi'",
    ],
    ids=["workflow-cell", "decorator"],
)
def test_a_defined_workflow_opens_the_app_so_interrupted_instances_resume(
    tmp_path: Path, definition: str
) -> None:
    # After a kernel restart, re-running the defining cells is all it takes to resume.
    *_, is_open = shell(
        tmp_path,
        "%load_ext romancy_nb",
        definition,
        "from romancy_nb.notebook import state\nstate.has_app() and state.current_app().is_open",
    )
    assert is_open == "True"
    assert (tmp_path / "romancy.db").exists()
