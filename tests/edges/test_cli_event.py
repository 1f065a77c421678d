"""``romancy-nb event TYPE --data JSON`` wakes a workflow waiting in another process."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

import romancy_nb as rn
from romancy_nb.cli import app as cli_app
from romancy_nb.store import open_store
from romancy_nb.testing import eventually

ENV = {"COLUMNS": "200", "ROMANCY_DB": None, "ROMANCY_DEBUG": None}


@rn.workflow
async def cli_ev_waiter(ctx: rn.WorkflowContext) -> dict:
    ev = await ctx.wait_event("cli.approved", timeout=60)
    return {"data": ev.data, "source": ev.source, "id": ev.id}


def _entry_point() -> str:
    beside = Path(sys.executable).with_name("romancy-nb")
    found = str(beside) if beside.exists() else shutil.which("romancy-nb")
    assert found, "romancy-nb is not installed: pip install -e . first"
    return found


async def test_the_event_command_resumes_a_waiting_workflow(store_url: str) -> None:
    async with rn.App(store_url) as app:
        iid = await app.start(cli_ev_waiter)
        await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
        args = ["--db", store_url, "event", "cli.approved", "--data", '{"ok": true}']
        done = await asyncio.to_thread(
            subprocess.run,
            [_entry_point(), *args, "--id", "e-7", "--json"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {
            "type": "cli.approved",
            "id": "e-7",
            "source": "romancy-nb-cli",
        }
        # the CLI process only stored it; this process's watcher noticed and resumed
        result = await app.result(iid, timeout=20)
        assert result == {"data": {"ok": True}, "source": "romancy-nb-cli", "id": "e-7"}


def test_bad_json_is_a_usage_error(tmp_path: Path) -> None:
    db = tmp_path / "romancy.db"  # the data is refused before any database is opened
    db.touch()
    result = CliRunner().invoke(
        cli_app, ["event", "x.y", "--data", "{nope", "--db", str(db)], env=ENV
    )
    assert result.exit_code == 2
    assert "--data is not valid JSON" in result.stderr


def test_a_missing_database_is_not_found(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli_app, ["event", "x.y", "--db", str(tmp_path / "nope.db")], env=ENV
    )
    assert result.exit_code == 3


def test_plain_output(store_url: str) -> None:
    store = open_store(store_url)  # an existing database: the command refuses a missing one
    store.migrate()
    store.close()
    result = CliRunner().invoke(
        cli_app, ["event", "x.y", "-d", "[1, 2]", "--id", "i-1", "--db", store_url], env=ENV
    )
    assert result.exit_code == 0, result.output
    assert "sent x.y (id i-1)" in result.stdout


def test_an_event_handler_workflow_is_started_for_a_worker(store_url: str) -> None:
    store = open_store(store_url)
    store.migrate()
    store.close()
    args = ["--db", store_url, "-i", "tests.edges.ingress_flows", "event", "ingress.signup"]
    data = ["--data", '{"email": "a@x.org"}', "--id", "s-1", "--json"]
    result = CliRunner().invoke(cli_app, [*args, *data], env=ENV)
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["instance_id"] == "ingress.signup:s-1"
    again = CliRunner().invoke(cli_app, [*args, *data], env=ENV)  # a repeat starts nothing
    assert json.loads(again.stdout)["instance_id"] == "ingress.signup:s-1"
    bad = CliRunner().invoke(cli_app, [*args, "--data", '{"plan": "pro"}'], env=ENV)
    assert bad.exit_code == 1
    assert "email" in bad.stderr

    async def run() -> str:
        async with rn.App(store_url) as worker:  # the CLI only stored the start
            assert [i.instance_id for i in worker.list_instances().instances] == [
                "ingress.signup:s-1"
            ]
            return await worker.result("ingress.signup:s-1", timeout=60)

    assert asyncio.run(run()) == "welcome a@x.org (free)"
