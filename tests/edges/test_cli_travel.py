"""``romancy-nb replay|rewind|rollback|retry|fork|compare``: time travel from a shell."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import romancy_nb as rn
from romancy_nb.cli import app as cli_app
from romancy_nb.cli.common import import_modules
from tests.edges.test_cli import ENV, cli, store

MODULE = """
import os
from pathlib import Path

import romancy_nb as rn

UNDO_LOG = Path(os.environ["CLI_TT_UNDO_LOG"])


@rn.activity
async def cli_tt_step(ctx: rn.ActivityContext, label: str) -> str:
    if label.endswith("-fail") and os.environ.get("CLI_TT_OUTAGE"):
        raise rn.TerminalError("outage")
    return label.upper()


@cli_tt_step.compensation
async def cli_tt_undo(ctx: rn.ActivityContext, label: str) -> None:
    with UNDO_LOG.open("a") as log:
        log.write(label + "\\n")


@rn.workflow
async def cli_tt_flow(ctx: rn.WorkflowContext, topic: str) -> list[str]:
    suffix = os.environ.get("CLI_TT_SUFFIX", "")
    return [
        await cli_tt_step(ctx, topic + "-1"),
        await cli_tt_step(ctx, topic + "-2" + suffix),
        await cli_tt_step(ctx, topic + "-fail"),
    ]
"""


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLI_TT_UNDO_LOG", str(tmp_path / "undo.log"))
    for name in ("CLI_TT_SUFFIX", "CLI_TT_OUTAGE"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "cli_tt_module.py"
    path.write_text(MODULE)
    import_modules([str(path)])
    return path


def _completed(db: str, instance_id: str = "t-1") -> str:
    app = rn.App(db)
    app.run("cli_tt_flow", "t", instance_id=instance_id)
    return instance_id


def typed(db: str, module: Path, args: list[str], text: str) -> Result:
    """``romancy-nb --db DB --import MODULE ARGS`` with ``text`` typed at its prompt."""
    command = ["--db", str(db), "--import", str(module), *args]
    return CliRunner().invoke(cli_app, command, input=text, env=ENV)


def _finish(db: str, iid: str) -> list[str]:
    """Resume what the CLI left running, as a worker would, and return its result."""
    app = rn.App(db)

    async def main() -> list[str]:
        async with app:
            result: list[str] = await app.result(iid, timeout=30)
            return result

    return asyncio.run(main())


def test_replay_shows_every_step_and_exits_1_on_a_divergence(
    module: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    iid = _completed(store_url)
    ok = cli("--db", store_url, "--import", str(module), "replay", iid)
    assert ok.exit_code == 0, ok.output
    assert ok.output.count("matched") == 3
    monkeypatch.setenv("CLI_TT_SUFFIX", "-edited")
    diverged = cli("--db", store_url, "--import", str(module), "replay", iid, "--json")
    assert diverged.exit_code == 1, diverged.output
    report = json.loads(diverged.output)
    assert [row["status"] for row in report["rows"]] == ["matched", "diverged", "not reached"]
    assert '+    "t-2-edited"' in report["rows"][1]["diff"]


def test_replay_of_an_unknown_instance_exits_3(store_url: str, module: Path) -> None:
    _completed(store_url)
    missing = cli("--db", store_url, "replay", "nope")
    assert missing.exit_code == 3 and "no instance 'nope'" in missing.output


def test_rewind_leaves_the_instance_to_resume_with_the_current_code(
    module: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    iid = _completed(store_url)
    monkeypatch.setenv("CLI_TT_SUFFIX", "-v2")
    result = cli("--db", store_url, "rewind", iid, "cli_tt_step:1")
    assert result.exit_code == 0, result.output
    assert "rewound" in result.output and "kept 1 step(s), archived 2" in result.output
    assert _finish(store_url, iid) == ["T-1", "T-2-V2", "T-FAIL"]
    usage = cli("--db", store_url, "rewind", iid)
    assert usage.exit_code == 2 and "--to-start" in usage.output


def test_rollback_lists_the_compensations_and_asks_first(module: Path, store_url: str) -> None:
    iid = _completed(store_url)
    refused = typed(store_url, module, ["rollback", iid, "cli_tt_step:1"], "n\n")
    assert refused.exit_code == 1 and "cli_tt_undo for cli_tt_step:3" in refused.output
    with store(store_url) as app:
        assert app.get_instance(iid).status == "completed"
    done = typed(store_url, module, ["rollback", iid, "cli_tt_step:1"], "y\n")
    assert done.exit_code == 0, done.output
    assert "compensated, in this order: cli_tt_step:3, cli_tt_step:2" in done.output
    undo_log = Path(module.parent / "undo.log").read_text().split()
    assert undo_log == ["t-fail", "t-2"]


def test_retry_fork_and_compare(
    module: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLI_TT_OUTAGE", "1")
    app = rn.App(store_url)
    with pytest.raises(rn.TerminalError):
        app.run("cli_tt_flow", "t", instance_id="f-1")
    monkeypatch.delenv("CLI_TT_OUTAGE")
    retried = cli("--db", store_url, "--import", str(module), "retry", "f-1")
    assert retried.exit_code == 0, retried.output
    assert _finish(store_url, "f-1") == ["T-1", "T-2", "T-FAIL"]

    fork = cli("--db", store_url, "fork", "f-1", "--at", "cli_tt_step:2", "--id", "f-2")
    assert fork.exit_code == 0 and "forked f-1 as f-2" in fork.output
    assert _finish(store_url, "f-2") == ["T-1", "T-2", "T-FAIL"]
    compare = cli("--db", store_url, "compare", "f-1", "f-2", "--json")
    assert compare.exit_code == 0, compare.output
    rows = json.loads(compare.output)
    assert [row["step_id"] for row in rows] == [f"cli_tt_step:{n}" for n in (1, 2, 3)]
    assert [row["differs"] for row in rows] == ["", "", ""]  # the fork re-ran step 3 alike
    bad = cli("--db", store_url, "fork", "f-1", "--input", "[1]")
    assert bad.exit_code == 2 and "JSON object" in bad.output


def test_get_shows_where_a_fork_came_from(module: Path, store_url: str) -> None:
    iid = _completed(store_url)
    assert (
        cli("--db", store_url, "fork", iid, "--at", "cli_tt_step:1", "--id", "g-2").exit_code == 0
    )
    shown = cli("--db", store_url, "get", "g-2")
    assert (
        shown.exit_code == 0
        and "forked from" in shown.output
        and "t-1 at cli_tt_step:1" in shown.output
    )
    as_json = json.loads(cli("--db", store_url, "get", "g-2", "--json").output)
    assert (as_json["forked_from"], as_json["forked_at"]) == ("t-1", "cli_tt_step:1")
