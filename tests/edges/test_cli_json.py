"""``--json`` on the commands that change something: ``migrate`` and ``cancel``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import romancy_nb as rn
from tests.edges.test_cli import FLOWS_MODULE, _start_holding, cli, hold_registry


def test_migrate_json_lists_the_versions_applied(store_url: str) -> None:
    first = json.loads(cli("migrate", "--json", "--db", store_url).stdout)
    assert first["db"] == store_url and first["applied"]
    again = json.loads(cli("migrate", "--json", "--db", store_url).stdout)
    assert again == {"db": store_url, "applied": []}


def test_cancel_json_names_the_compensations(tmp_path: Path) -> None:
    db = tmp_path / "cancel.db"

    async def start_then_stop() -> None:
        async with rn.App(db, registry=hold_registry) as app:
            await _start_holding(app, "hold-j")

    asyncio.run(start_then_stop())
    module = tmp_path / "cli_hold_flows.py"
    module.write_text(FLOWS_MODULE)
    # A real process: importing the module here would register its workflow in this one.
    done = subprocess.run(
        [sys.executable, "-m", "romancy_nb.cli", "cancel", "hold-j", "--json", "--db", str(db),
         "--import", str(module)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert (answer["instance_id"], answer["status"]) == ("hold-j", "cancelled")
    assert [s["step_id"] for s in answer["compensations"]] == ["compensate:cli_book:1"]
