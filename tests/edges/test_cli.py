"""The ``romancy-nb`` command line: output that matches the store, exit codes, the README."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

import romancy_nb as rn
from romancy_nb.cli import app as cli_app
from romancy_nb.testing import eventually

README = Path(__file__).resolve().parents[2] / "README.md"
ENV = {"COLUMNS": "200", "ROMANCY_DB": None, "ROMANCY_DEBUG": None}


def cli(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli_app, list(args), env={**ENV, **(env or {})})


@contextmanager
def store(db: Path) -> Iterator[rn.App]:
    """An App for reading what the CLI wrote; its store closed after."""
    app = rn.App(db)
    try:
        yield app
    finally:
        app.store.close()


def entry_point() -> str:
    """The installed ``romancy-nb`` script of this interpreter's environment."""
    beside = Path(sys.executable).with_name("romancy-nb")
    found = str(beside) if beside.exists() else shutil.which("romancy-nb")
    assert found, "romancy-nb is not installed: pip install -e . first"
    return found


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database the demo has run in (in-process), shared by the read-only tests."""
    db = tmp_path_factory.mktemp("demo") / "demo.db"
    result = cli("demo", "--db", str(db))
    assert result.exit_code == 0, result.output
    return db


def _ids(db: Path) -> dict[str, str]:
    with store(db) as app:
        return {info.status: info.instance_id for info in app.list_instances()}


# the demo


def _assert_demo_store(db: Path) -> None:
    with store(db) as app:
        instances = {info.status: info for info in app.list_instances()}
        assert sorted(instances) == ["completed", "failed"]
        done, failed = instances["completed"], instances["failed"]
        assert done.workflow_name == failed.workflow_name == "order_flow"
        assert done.output["tracking"].startswith("track-")
        assert failed.error["type"].endswith("TerminalError")
        steps = [(s.step_id, s.kind, s.status) for s in app.get_history(failed.instance_id)]
        assert [s.step_id for s in app.get_history(done.instance_id)] == [
            "reserve_inventory:1",
            "charge_payment:1",
            "ship_order:1",
        ]
    # Compensations after the failure, newest step first: refund, then release.
    assert steps == [
        ("reserve_inventory:1", "activity", "completed"),
        ("charge_payment:1", "activity", "completed"),
        ("ship_order:1", "activity", "failed"),
        ("compensate:charge_payment:1", "compensation", "completed"),
        ("compensate:reserve_inventory:1", "compensation", "completed"),
    ]


def test_installed_entry_point_runs_the_demo(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    env = {k: v for k, v in os.environ.items() if k not in ("ROMANCY_DB", "ROMANCY_DEBUG")}
    done = subprocess.run(
        [entry_point(), "demo", "--db", str(db)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "What happened" in done.stdout
    assert "compensate:charge_payment:1" in done.stdout
    assert "Traceback" not in done.stderr
    _assert_demo_store(db)


def test_demo_in_process_records_the_saga(demo_db: Path) -> None:
    _assert_demo_store(demo_db)


def test_demo_without_db_writes_a_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = cli("demo")
    assert result.exit_code == 0, result.output
    [db] = tmp_path.glob("romancy-demo-*/demo.db")
    assert str(db) in result.stdout
    _assert_demo_store(db)


def test_demo_twice_on_one_database_starts_new_instances(tmp_path: Path) -> None:
    db = tmp_path / "twice.db"
    assert cli("demo", "--db", str(db)).exit_code == 0
    assert cli("demo", "--db", str(db)).exit_code == 0
    with store(db) as app:
        assert len(app.list_instances()) == 4


def test_demo_json_is_the_two_instances_and_their_histories(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    result = cli("demo", "--db", str(db), "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)  # the narrative is left out: only the document
    assert shown["db"] == str(db)
    with store(db) as app:
        for instance in shown["instances"]:
            stored = app.get_instance(instance["instance_id"])
            assert instance["status"] == stored.status
            steps = [s.step_id for s in app.get_history(stored.instance_id)]
            assert [s["step_id"] for s in instance["history"]] == steps
    assert sorted(i["status"] for i in shown["instances"]) == ["completed", "failed"]


# list, get, history


def test_list_json_matches_the_store(demo_db: Path) -> None:
    result = cli("list", "--db", str(demo_db), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    with store(demo_db) as app:
        expected = app.list_instances()
    assert data["next_page_token"] is None
    assert [i["instance_id"] for i in data["instances"]] == [i.instance_id for i in expected]
    for got, info in zip(data["instances"], expected, strict=True):
        assert got["status"] == info.status
        assert got["workflow_name"] == info.workflow_name
        assert got["input"] == info.input
        assert got["output"] == info.output
        assert got["created_at"] == info.created_at.isoformat()
        assert got["updated_at"] == info.updated_at.isoformat()


def test_list_table_shows_each_instance(demo_db: Path) -> None:
    result = cli("list", "--db", str(demo_db))
    assert result.exit_code == 0, result.output
    for status, iid in _ids(demo_db).items():
        [line] = [line for line in result.stdout.splitlines() if iid in line]
        assert status in line and "order_flow" in line
    assert "page-token" not in result.stdout


def test_list_pages_with_tokens(demo_db: Path) -> None:
    first = json.loads(cli("list", "--db", str(demo_db), "--limit", "1", "--json").stdout)
    token = first["next_page_token"]
    assert token and len(first["instances"]) == 1
    second = json.loads(
        cli("list", "--db", str(demo_db), "-n", "1", "--page-token", token, "--json").stdout
    )
    assert second["next_page_token"] is None
    seen = [i["instance_id"] for i in first["instances"] + second["instances"]]
    assert sorted(seen) == sorted(_ids(demo_db).values())
    table = cli("list", "--db", str(demo_db), "--limit", "1")
    assert f"--page-token {token}" in table.stdout


def test_list_filters(demo_db: Path) -> None:
    failed = json.loads(cli("list", "--db", str(demo_db), "--status", "failed", "--json").stdout)
    assert [i["status"] for i in failed["instances"]] == ["failed"]
    none = cli("list", "--db", str(demo_db), "--workflow", "no_such_flow")
    assert none.exit_code == 0 and "no instances match" in none.stdout
    mine = json.loads(cli("list", "--db", str(demo_db), "-w", "order_flow", "--json").stdout)
    assert len(mine["instances"]) == 2


def test_get_json_matches_the_store(demo_db: Path) -> None:
    for iid in _ids(demo_db).values():
        result = cli("get", iid, "--db", str(demo_db), "--json")
        assert result.exit_code == 0, result.output
        with store(demo_db) as app:
            info = app.get_instance(iid)
        data = json.loads(result.stdout)
        assert data["instance_id"] == iid
        assert data["status"] == info.status
        assert data["input"] == info.input
        assert data["output"] == info.output
        assert data["error"] == info.error
        assert data["created_at"] == info.created_at.isoformat()


def test_get_table_summarises_the_error(demo_db: Path) -> None:
    result = cli("get", _ids(demo_db)["failed"], "--db", str(demo_db))
    assert result.exit_code == 0, result.output
    assert "TerminalError: the courier does not deliver to Atlantis" in result.stdout
    assert "Traceback" not in result.stdout  # the stored traceback is for --json only
    done = cli("get", _ids(demo_db)["completed"], "--db", str(demo_db))
    assert "track-A-1" in done.stdout


def test_history_json_matches_the_store(demo_db: Path) -> None:
    iid = _ids(demo_db)["failed"]
    result = cli("history", iid, "--db", str(demo_db), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    with store(demo_db) as app:
        steps = app.get_history(iid)
    assert [d["seq"] for d in data] == [s.seq for s in steps]
    assert [d["step_id"] for d in data] == [s.step_id for s in steps]
    assert [d["status"] for d in data] == [s.status for s in steps]
    assert [d["attempts"] for d in data] == [s.attempts for s in steps]
    assert [d["started_at"] for d in data] == [s.started_at.isoformat() for s in steps]
    for d, s in zip(data, steps, strict=True):
        assert d["duration_ms"] == pytest.approx(s.duration * 1000, abs=0.01)


def test_history_table_shows_steps_and_compensations(demo_db: Path) -> None:
    result = cli("history", _ids(demo_db)["failed"], "--db", str(demo_db))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert re.search(r"seq\s+step\s+kind\s+status\s+tries\s+time\s+output / error", lines[0])
    rows = [line.split() for line in lines[2:] if line.strip()]
    assert [row[1] for row in rows] == [
        "reserve_inventory:1",
        "charge_payment:1",
        "ship_order:1",
        "compensate:charge_payment:1",
        "compensate:reserve_inventory:1",
    ]
    assert rows[2][2:4] == ["activity", "failed"]
    assert "TerminalError: the courier" in lines[4]
    assert rows[3][2:4] == ["compensation", "completed"]
    # A compensation returns nothing: its row says what it undid.
    assert "undid charge_payment:1" in lines[5]
    assert "undid reserve_inventory:1" in lines[6]
    # Durations read as people write them, not as a bare number of milliseconds.
    assert re.search(r"\d(\.\d)? (µs|ms|s)\b", lines[2])


# exit codes and errors


@pytest.mark.parametrize("command", ["get", "history", "cancel"])
def test_unknown_instance_exits_3(demo_db: Path, command: str) -> None:
    result = cli(command, "no-such-id", "--db", str(demo_db))
    assert result.exit_code == 3
    assert "no instance 'no-such-id'" in result.stderr
    assert "Traceback" not in result.output


def test_missing_database_exits_3_and_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "typo.db"
    for args in (["list"], ["get", "x"], ["history", "x"], ["cancel", "x"]):
        result = cli(*args, "--db", str(db))
        assert result.exit_code == 3, args
        assert f"no database at {db}" in result.stderr
    assert not db.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["list", "--limit", "0"],
        ["list", "--page-token", "not-a-token"],
        ["no-such-command"],
        ["get"],
        ["--import", "no_such_module_anywhere", "list"],
        ["cancel", "x", "--import", "missing/flows.py"],
    ],
)
def test_usage_errors_exit_2(demo_db: Path, args: list[str]) -> None:
    result = cli(*args, "--db", str(demo_db)) if args[0] != "no-such-command" else cli(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_runtime_errors_are_one_readable_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database, it only has a .db name" * 100)
    result = cli("list", "--db", str(junk))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: StoreError:")
    assert "not a SQLite database" in result.stderr
    assert "Traceback" not in result.output


def test_unexpected_errors_hide_the_traceback_unless_asked(tmp_path: Path) -> None:
    broken = tmp_path / "broken_flows.py"
    broken.write_text("raise RuntimeError('boom at import')\n")
    result = cli("--import", str(broken), "list", "--db", str(tmp_path / "x.db"))
    assert result.exit_code == 1
    assert "unexpected RuntimeError: boom at import" in result.stderr
    assert "ROMANCY_DEBUG" in result.stderr
    assert "Traceback" not in result.output


# where the database comes from


def test_db_from_env_global_option_and_command_option(
    demo_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_list = cli("list", "--json", env={"ROMANCY_DB": str(demo_db)})
    assert len(json.loads(env_list.stdout)["instances"]) == 2
    global_list = cli("--db", str(demo_db), "list", "--json")
    assert len(json.loads(global_list.stdout)["instances"]) == 2
    other = tmp_path / "other.db"
    assert cli("migrate", "--db", str(other)).exit_code == 0
    # The command's own --db wins over the environment.
    local = cli("list", "--db", str(other), "--json", env={"ROMANCY_DB": str(demo_db)})
    assert json.loads(local.stdout)["instances"] == []
    # No option, no environment: ./romancy.db.
    monkeypatch.chdir(tmp_path)
    assert cli("list").exit_code == 3
    assert cli("migrate").exit_code == 0
    assert (tmp_path / "romancy.db").exists()
    assert cli("list").exit_code == 0


def test_migrate_reports_what_it_applied(store_url: str) -> None:
    first = cli("migrate", "--db", store_url)
    assert first.exit_code == 0, first.output
    versions = re.findall(r"\b\d{14}\b", first.stdout)
    assert versions and "applied" in first.stdout
    again = cli("migrate", "--db", store_url)
    assert again.exit_code == 0 and "up to date" in again.stdout


# cancel

hold_registry = rn.Registry()
"""Definitions the tests run instances with, kept out of the CLI's process-wide registry."""


@rn.activity(registry=hold_registry, name="cli_book")
async def hold_book(ctx: rn.ActivityContext, n: int) -> str:
    return f"booked-{n}"


@hold_book.compensation
async def hold_unbook(ctx: rn.ActivityContext, n: int) -> None:
    pass


@rn.activity(registry=hold_registry, name="cli_wait")
async def hold_wait(ctx: rn.ActivityContext, n: int) -> None:
    await asyncio.Event().wait()  # until the instance is stopped or cancelled


@rn.workflow(registry=hold_registry, name="cli_hold_flow")
async def hold_flow(ctx: rn.WorkflowContext, n: int) -> str:
    booked = await hold_book(ctx, n)
    await hold_wait(ctx, n)
    return booked


FLOWS_MODULE = '''
"""The definitions of cli_hold_flow, as a user's module that ``--import`` loads."""
import asyncio

import romancy_nb as rn


@rn.activity(name="cli_book")
async def book(ctx: rn.ActivityContext, n: int) -> str:
    return f"booked-{n}"


@book.compensation
async def unbook(ctx: rn.ActivityContext, n: int) -> None:
    pass


@rn.activity(name="cli_wait")
async def wait(ctx: rn.ActivityContext, n: int) -> None:
    await asyncio.Event().wait()


@rn.workflow(name="cli_hold_flow")
async def hold(ctx: rn.WorkflowContext, n: int) -> str:
    booked = await book(ctx, n)
    await wait(ctx, n)
    return booked
'''


async def _start_holding(app: rn.App, instance_id: str) -> None:
    await app.start(hold_flow, 7, instance_id=instance_id)
    await eventually(lambda: app.get_history(instance_id), message="first step recorded")


def test_cancel_without_definitions_then_with_import(tmp_path: Path) -> None:
    db = tmp_path / "cancel.db"

    async def start_then_stop() -> None:
        # Closing the app stops the run and frees the instance: running, held by nobody.
        async with rn.App(db, registry=hold_registry) as app:
            await _start_holding(app, "hold-1")

    asyncio.run(start_then_stop())
    with store(db) as app:
        assert app.get_instance("hold-1").status == "running"
        assert "cli_hold_flow" not in {w.name for w in app.registry.workflows()}

    refused = cli("cancel", "hold-1", "--db", str(db), "--reason", "customer left")
    assert refused.exit_code == 1
    assert "not defined in this process" in refused.stderr
    assert "--import" in refused.stderr
    with store(db) as app:
        info = app.get_instance("hold-1")
    assert info.status == "running"
    assert info.cancel_reason == "customer left"  # recorded for a worker to honour

    module = tmp_path / "cli_hold_flows.py"
    module.write_text(FLOWS_MODULE)
    done = cli("cancel", "hold-1", "--db", str(db), "--import", str(module))
    assert done.exit_code == 0, done.output
    assert "cancelled hold-1" in done.stdout
    assert "compensate:cli_book:1" in done.stdout
    with store(db) as app:
        assert app.get_instance("hold-1").status == "cancelled"
        steps = [(s.step_id, s.status) for s in app.get_history("hold-1")]
    assert steps == [("cli_book:1", "completed"), ("compensate:cli_book:1", "completed")]

    again = cli("cancel", "hold-1", "--db", str(db))
    assert again.exit_code == 1
    assert "already cancelled" in again.stderr


async def test_cancel_of_an_instance_a_live_worker_holds(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    async with rn.App(db, registry=hold_registry, sweep_interval=0.05) as worker:
        await _start_holding(worker, "hold-2")
        # The CLI runs its own event loop: give it a thread, as a separate process would be.
        result = await asyncio.to_thread(cli, "cancel", "hold-2", "--db", str(db))
        assert result.exit_code == 0, result.output
        assert "cancellation requested" in result.stdout
        assert worker.worker_id in result.stdout
        await eventually(lambda: worker.get_instance("hold-2").status == "cancelled")
        steps = [s.step_id for s in worker.get_history("hold-2")]
    assert steps == ["cli_book:1", "compensate:cli_book:1"]


def test_cancel_of_a_finished_instance_exits_1(demo_db: Path) -> None:
    result = cli("cancel", _ids(demo_db)["completed"], "--db", str(demo_db))
    assert result.exit_code == 1
    assert "already completed; nothing to cancel" in result.stderr


# the README


def _readme_commands() -> dict[str, list[str]]:
    """Each command in the README's '## Command line' section, with the options it shows."""
    text = README.read_text("utf-8")
    match = re.search(r"^## Command line\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert match, "README.md has no '## Command line' section"
    found: dict[str, list[str]] = {}
    for usage in re.findall(r"^- `romancy-nb ([^`]+)`", match.group(1), re.MULTILINE):
        name, *rest = usage.split()
        found[name] = re.findall(r"--[\w-]+", " ".join(rest))
    return found


def test_readme_documents_every_command_and_nothing_else() -> None:
    documented = _readme_commands()
    group = typer.main.get_command(cli_app)
    commands = group.commands  # type: ignore[attr-defined]
    assert sorted(documented) == sorted(commands)
    for name, options in documented.items():
        known = {opt for param in commands[name].params for opt in param.opts}
        assert set(options) <= known, (name, set(options) - known)
        assert cli(name, "--help").exit_code == 0


# the outbox


@rn.activity(transactional=False)
def cli_announce(ctx: rn.ActivityContext, n: int) -> None:
    ctx.send_event("cli.placed", {"n": n}, subject=f"order-{n}")


@rn.workflow
async def cli_announcing(ctx: rn.WorkflowContext, n: int) -> None:
    await cli_announce(ctx, n)


def test_outbox_lists_the_events_activities_sent(tmp_path: Path) -> None:
    db = tmp_path / "outbox.db"
    assert cli("outbox", "--db", str(db)).exit_code == 3  # no such database
    app = rn.App(db)
    app.ensure_schema()
    empty = cli("outbox", "--db", str(db))
    assert empty.exit_code == 0, empty.output
    assert "no outbox events" in empty.output
    for n in (1, 2):
        app.run(cli_announcing, n)

    table = cli("outbox", "--db", str(db))
    assert table.exit_code == 0, table.output
    assert table.output.count("cli.placed") == 2 and "pending" in table.output
    result = cli("outbox", "--db", str(db), "--json", "--limit", "1")
    assert result.exit_code == 0, result.output
    (newest,) = json.loads(result.output)["events"]
    assert (newest["type"], newest["subject"], newest["data"]) == (
        "cli.placed",
        "order-2",
        {"n": 2},
    )
    assert (newest["status"], newest["attempts"], newest["delivered_at"]) == ("pending", 0, None)
    assert newest["source"] == "romancy_nb/cli_announcing"
    none = cli("outbox", "--db", str(db), "--status", "failed")
    assert none.exit_code == 0 and "no outbox events match" in none.output
    bad = cli("outbox", "--db", str(db), "--status", "sent")
    assert bad.exit_code == 2 and "not an outbox status" in bad.output
