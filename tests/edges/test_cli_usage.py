"""Arguments the API refuses are usage errors (exit 2) that say what is wrong, not crashes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner, Result

from romancy_nb.cli import app as cli_app
from romancy_nb.cli.commands import STATUSES

ENV = {"COLUMNS": "200", "ROMANCY_DB": None, "ROMANCY_DEBUG": None}
EXIT_USAGE = 2


def cli(*args: str) -> Result:
    return CliRunner().invoke(cli_app, list(args), env=ENV)


@pytest.fixture
def db(tmp_path: Path) -> str:
    """An existing, migrated database, so a command that got past its arguments would run."""
    path = str(tmp_path / "romancy.db")
    assert cli("migrate", "--db", path).exit_code == 0
    return path


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["event", ""], "Invalid value for 'TYPE': must not be empty"),
        (["event", "order.paid", "--id", ""], "Invalid value for '--id': must not be empty"),
    ],
)
def test_an_empty_event_type_or_id_is_a_usage_error(db: str, args: list[str], says: str) -> None:
    result = cli(*args, "--db", db)
    assert result.exit_code == EXIT_USAGE, result.output
    assert says in " ".join(result.output.split())
    assert "unexpected" not in result.output


@pytest.mark.parametrize("command", ["get", "history", "cancel"])
@pytest.mark.parametrize(
    ("instance_id", "says"),
    [("", "must not be empty"), ("order-\udcff", "lone surrogate")],
    ids=["empty", "lone-surrogate"],
)
def test_an_id_no_instance_can_have_is_a_usage_error(
    db: str, command: str, instance_id: str, says: str
) -> None:
    result = cli(command, instance_id, "--db", db)
    assert result.exit_code == EXIT_USAGE, result.output
    assert says in " ".join(result.output.split())


def test_an_unknown_status_is_a_usage_error_listing_the_known_ones(db: str) -> None:
    result = cli("list", "--status", "bogus", "--db", db)
    assert result.exit_code == EXIT_USAGE, result.output
    text = " ".join(result.output.split())
    assert "'bogus' is not a status" in text
    for status in ("running", "waiting_for_event", "completed", "failed", "cancelled"):
        assert status in text
    for status in STATUSES:
        assert cli("list", "--status", status, "--db", db).exit_code == 0


COMMANDS = sorted(typer.main.get_command(cli_app).commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", [[], *([name] for name in COMMANDS)])
def test_help_shows_no_value_placeholder_on_flags(command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    help_line = next(line for line in result.output.splitlines() if "--help" in line)
    assert help_line.split("--help")[1].split()[:2] == ["-h", "Show"]
    if command == ["list"]:  # an option that takes a value keeps its placeholder
        assert re.search(r"--limit\s+-n\s+<int", result.output)


ISSUE_COMMANDS = ["list", "get", "history", "event", "cancel", "replay", "worker", "serve",
                  "run", "migrate", "demo"]  # fmt: skip


@pytest.mark.parametrize("command", ISSUE_COMMANDS)
def test_help_shows_an_example(command: str) -> None:
    result = cli(command, "--help")
    assert result.exit_code == 0, result.output
    assert re.search(r"Examples?:\s+romancy-nb ", result.output) or re.search(
        r"Examples?:.*\n\s+(\S+=\S+ )?romancy-nb ", result.output
    ), result.output
