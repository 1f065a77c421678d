"""A real IPython shell with the extension loaded, on a fresh database in ``tmp_path``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

import romancy_nb as rn


class Shell:
    """Runs cells in the shell and fails the test on an unexpected error."""

    def __init__(self, shell: InteractiveShell) -> None:
        self.shell = shell

    def run(self, cell: str) -> Any:
        result = self.shell.run_cell(cell, store_history=True)
        if result.error_before_exec or result.error_in_exec:
            raise AssertionError(
                f"cell failed: {result.error_before_exec or result.error_in_exec!r}\n{cell}"
            )
        return result.result

    def fails(self, cell: str) -> BaseException:
        result = self.shell.run_cell(cell, store_history=True)
        error = result.error_before_exec or result.error_in_exec
        assert error is not None, f"cell should have failed:\n{cell}"
        return error

    @property
    def ns(self) -> dict[str, Any]:
        return self.shell.user_ns


@pytest.fixture
def ip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Shell]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ROMANCY_DB", raising=False)
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext romancy_nb")
    shell.user_ns["rn"] = rn
    try:
        yield Shell(shell)
    finally:
        shell.run_cell("%unload_ext romancy_nb")
