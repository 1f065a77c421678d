"""Magics through a real ``InteractiveShell``: define, start, inspect, cancel, configure."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from IPython.core.error import UsageError

import romancy_nb as rn
from romancy_nb.engine import registry
from romancy_nb.notebook import views
from tests.notebook.conftest import Shell

ACTIVITY = """
%%activity --retry 2 --retry-interval 0
def double(ctx, x: int) -> int:
    return 2 * x
"""
WORKFLOW = """
%%workflow
async def doubler(ctx, x: int) -> int:
    return await double(ctx, x) + {extra}
"""


def test_load_binds_an_open_app_beside_the_notebook(ip: Shell, tmp_path: Path) -> None:
    app = rn.current_app()
    assert app.is_open
    assert Path(app.url) == tmp_path / "romancy.db"
    magics = ip.shell.magics_manager.magics
    assert {"workflow", "activity", "sql"} <= set(magics["cell"])
    assert "romancy" in magics["line"]


def test_cells_define_and_top_level_await_runs(ip: Shell) -> None:
    ip.run(ACTIVITY)
    ip.run(WORKFLOW.format(extra=0))
    assert isinstance(ip.ns["doubler"], rn.Workflow)
    assert registry.find_activity("double").retry.max_attempts == 2
    ip.run("iid = await rn.current_app().start(doubler, 21)")
    assert ip.run("await rn.current_app().result(iid)") == 42


def test_rerunning_a_cell_records_a_new_code_version(ip: Shell) -> None:
    ip.run(ACTIVITY)
    ip.run(WORKFLOW.format(extra=0))
    ip.run("a = await rn.current_app().start(doubler, 1)\nawait rn.current_app().result(a)")
    first = ip.ns["doubler"].code_version
    ip.run(WORKFLOW.format(extra=100))
    assert ip.ns["doubler"].code_version != first
    assert (
        ip.run("b = await rn.current_app().start(doubler, 1)\nawait rn.current_app().result(b)")
        == 102
    )
    frame = rn.instances()
    versions = dict(zip(frame["instance_id"], frame["code_version"], strict=True))
    assert versions[ip.ns["a"]] == first
    assert versions[ip.ns["b"]] == ip.ns["doubler"].code_version


def test_workflow_start_option_starts_an_instance(ip: Shell) -> None:
    ip.run(ACTIVITY)
    ip.run(
        WORKFLOW.format(extra=0).replace("%%workflow", "%%workflow --start '{\"x\": 4}' --id w-4")
    )
    assert ip.run("await rn.current_app().result('w-4')") == 8
    assert rn.current_app().get_instance("w-4").status == "completed"


def test_start_with_bad_input_fails_in_the_cell(ip: Shell) -> None:
    ip.run(ACTIVITY)
    error = ip.fails(
        WORKFLOW.format(extra=0).replace("%%workflow", '%%workflow --start \'{"x": "no"}\'')
    )
    assert isinstance(error, rn.InvalidArgumentsError)
    assert rn.instances().empty


def test_bad_options_raise_usage_errors(ip: Shell) -> None:
    error = ip.fails("%%activity --bogus\ndef f(ctx): pass")
    assert isinstance(error, UsageError)
    assert "usage" in str(error).lower() or "unrecognized" in str(error)
    error = ip.fails("%%workflow\nx = 1")
    assert isinstance(error, UsageError)
    assert "must define a function" in str(error)
    error = ip.fails("%%workflow\ndef not_async(ctx): pass")
    assert isinstance(error, UsageError)
    assert "async" in str(error)
    error = ip.fails("%%workflow --start '{oops'\nasync def f(ctx): pass")
    assert isinstance(error, UsageError)
    assert "JSON" in str(error)


def test_compensation_of_and_redefinition_keeps_it(ip: Shell) -> None:
    ip.run("%%activity\ndef reserve(ctx, item: str) -> str:\n    return item")
    ip.run("%%activity --compensation-of reserve\ndef release(ctx, item: str) -> None:\n    pass")
    assert registry.find_activity("reserve").compensator is ip.ns["release"]
    ip.run("%%activity\ndef reserve(ctx, item: str) -> str:\n    return item + '!'")
    assert registry.find_activity("reserve").compensator is ip.ns["release"]
    error = ip.fails("%%activity --compensation-of nothing_here\ndef undo(ctx): pass")
    assert isinstance(error, UsageError)


def test_romancy_list_show_history(ip: Shell) -> None:
    ip.run(ACTIVITY)
    ip.run(WORKFLOW.format(extra=0))
    ip.run(
        "iid = await rn.current_app().start(doubler, 3, instance_id='h-1')\n"
        "await rn.current_app().result(iid)"
    )
    listing = ip.run("%romancy list")
    assert list(listing.columns) == [
        "instance",
        "workflow",
        "status",
        "created (UTC)",
        "updated (UTC)",
        "error",
    ]
    assert list(listing["instance"]) == ["h-1"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", listing["created (UTC)"][0])
    assert list(ip.run("%romancy list --status failed")["instance"]) == []
    everything = ip.run("%romancy list --all")  # every column, typed
    assert list(everything.columns) == views.INSTANCE_COLUMNS
    assert everything["input"][0] == {"x": 3}
    history = ip.run("%romancy history h-1")
    assert list(history["step"]) == ["double:1"]
    assert history["output / error"][0] == "6"
    assert re.fullmatch(r"\d+(\.\d)? (µs|ms|s)", history["time"][0])  # not 0 days 00:00:00…
    typed = ip.run("%romancy history h-1 --all")
    assert list(typed.columns) == views.HISTORY_COLUMNS and typed["output"][0] == 6
    assert ip.run("%romancy show h-1") is not None
    error = ip.fails("%romancy show nope")
    assert isinstance(error, UsageError)
    assert "nope" in str(error)


def test_romancy_list_says_what_failed_and_history_what_was_undone(ip: Shell) -> None:
    ip.run("%%activity\ndef book(ctx, item: str) -> str:\n    return item")
    ip.run("%%activity --compensation-of book\ndef unbook(ctx, item: str) -> None:\n    pass")
    ip.run(
        "%%activity --retry 1\ndef charge(ctx) -> None:\n"
        "    raise rn.TerminalError('card <declined>\\nsecond line')"
    )
    ip.run(
        "%%workflow\nasync def trip(ctx) -> None:\n"
        "    await book(ctx, 'hotel')\n    await charge(ctx)"
    )
    ip.run(
        "try:\n    await rn.current_app().result(await rn.current_app().start(trip, "
        "instance_id='t-1'))\nexcept rn.TerminalError:\n    pass"
    )
    listing = ip.run("%romancy list")
    assert listing["status"][0] == "failed"
    assert listing["error"][0] == "TerminalError: card <declined>"  # its first line
    history = ip.run("%romancy history t-1")
    assert list(history["step"]) == ["book:1", "charge:1", "compensate:book:1"]
    assert list(history["output / error"]) == [
        "hotel",
        "TerminalError: card <declined>",
        "undid book:1",
    ]
    error = ip.fails("%romancy list --bogus")
    assert isinstance(error, UsageError)
    assert "unrecognized arguments: --bogus" in str(error) and "{list,show," in str(error)


def test_romancy_replay_shows_cached_steps_and_divergence(ip: Shell) -> None:
    ip.run(ACTIVITY)
    ip.run(WORKFLOW.format(extra=0))
    ip.run(
        "iid = await rn.current_app().start(doubler, 3, instance_id='r-1')\n"
        "await rn.current_app().result(iid)"
    )
    report = ip.run("%romancy replay r-1")
    assert report.outcome == "completed" and report.steps == ["double:1"]
    # Edit the workflow so it asks for another input: the replay names the divergence.
    ip.run(
        "%%workflow\nasync def doubler(ctx, x: int) -> int:\n    return await double(ctx, x + 1)"
    )
    report = ip.run("%romancy replay r-1")
    assert report.outcome == "diverged"
    assert report.error.step_id == "double:1" and "+    4" in report.error.diff
    from romancy_nb.notebook.debug import replay_frame

    frame = replay_frame(report)
    assert list(frame["status"]) == ["diverged"]
    assert rn.current_app().get_instance("r-1").status == "completed"  # nothing written


def test_romancy_cancel_runs_to_cancelled(ip: Shell) -> None:
    ip.run(
        "%%activity\nasync def wait_long(ctx) -> None:\n"
        "    import asyncio\n    await asyncio.sleep(60)"
    )
    ip.run("%%workflow\nasync def long_flow(ctx) -> None:\n    await wait_long(ctx)")
    ip.run(
        "import asyncio\niid = await rn.current_app().start(long_flow, instance_id='c-1')\n"
        "await asyncio.sleep(0.05)"
    )
    assert ip.run("%romancy cancel c-1") == "cancelled"
    assert rn.current_app().get_instance("c-1").status == "cancelled"
    error = ip.fails("%romancy cancel c-1")
    assert isinstance(error, UsageError)
    assert "already cancelled" in str(error)


def test_romancy_bad_subcommands(ip: Shell) -> None:
    error = ip.fails("%romancy frobnicate")
    assert isinstance(error, UsageError)
    for command in ("list", "show", "history", "cancel", "event", "config"):
        assert command in str(error)
    error = ip.fails("%romancy")
    assert isinstance(error, UsageError)
    error = ip.fails("%romancy show")
    assert isinstance(error, UsageError)
    assert "instance_id" in str(error)
    error = ip.fails("%romancy event approval {not json")
    assert isinstance(error, UsageError)


def test_romancy_config_rebinds_the_default_app(ip: Shell, tmp_path: Path) -> None:
    assert ip.run("%romancy config")["db"] == str(tmp_path / "romancy.db")
    other = tmp_path / "other.db"
    ip.run(f"%romancy config --db {other}")
    app = rn.current_app()
    assert app.url == str(other)
    assert app.is_open
    assert other.exists()


def test_unload_and_reload(ip: Shell) -> None:
    first = rn.current_app()
    ip.run("%reload_ext romancy_nb")
    assert not first.is_open
    assert rn.current_app() is not first and rn.current_app().is_open
    ip.run("%unload_ext romancy_nb")
    assert "romancy" not in ip.shell.magics_manager.magics["line"]
    error = ip.fails("%romancy list")
    assert isinstance(error, UsageError)  # "Line magic function `%romancy` not found."
    ip.run("%load_ext romancy_nb")
    assert "romancy" in ip.shell.magics_manager.magics["line"]


def test_import_romancy_nb_does_not_import_ipython() -> None:
    import subprocess
    import sys

    code = "import sys, romancy_nb; print('IPython' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize(
    "name", ["current_app", "instances", "history", "events", "timers", "messages"]
)
def test_notebook_names_are_exported(name: str) -> None:
    assert name in rn.__all__
    assert callable(getattr(rn, name))


def test_romancy_event_wakes_a_waiting_instance(
    ip: Shell, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run(
        "%%workflow\nasync def wait_go(ctx) -> dict:\n    return (await ctx.wait_event('go')).data"
    )
    ip.run(
        "import asyncio\nawait rn.current_app().start(wait_go, instance_id='ev-1')\n"
        "while rn.current_app().get_instance('ev-1').status != 'waiting_for_event':\n"
        "    await asyncio.sleep(0.01)"
    )
    capsys.readouterr()
    event_id = ip.run("%romancy event go '{\"ok\": true}'")
    assert isinstance(event_id, str) and event_id
    said = capsys.readouterr().out
    assert f"sent event 'go' (id {event_id}, source notebook): waking ev-1" in said
    assert ip.run("await rn.current_app().result('ev-1', timeout=10)") == {"ok": True}
    events = rn.events()
    assert list(events["type"]) == ["go"]
    assert events["source"][0] == "notebook"
    ip.run("%romancy event go")
    assert "no instance was waiting for it" in capsys.readouterr().out


def test_activity_options_reach_the_definition(ip: Shell) -> None:
    ip.run(
        "%%activity --name fetch --timeout 2.5 --no-transactional --retry 4\n"
        "async def fetch_it(ctx, url: str) -> str:\n    return url"
    )
    act = registry.find_activity("fetch")
    assert act is ip.ns["fetch_it"]
    assert act.timeout == 2.5
    assert act.transactional is False
    assert act.retry.max_attempts == 4
    ip.run(
        "%%workflow --name renamed_flow --event-handler\nasync def flow_fn(ctx) -> str:\n"
        "    return await fetch_it(ctx, 'u')"
    )
    wf = registry.find_workflow("renamed_flow")
    assert wf is ip.ns["flow_fn"] and wf.event_handler
    assert (
        ip.run("await rn.current_app().result(await rn.current_app().start('renamed_flow'))") == "u"
    )
    for bad in ("--timeout 0", "--retry 0", "--retry-interval -1", "--timeout soon"):
        error = ip.fails(f"%%activity {bad}\ndef bad_one(ctx) -> None:\n    pass")
        assert isinstance(error, UsageError), bad


def test_instances_started_with_the_old_code_keep_working(
    ip: Shell, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run(ACTIVITY)
    ip.run(
        "%%workflow\nasync def gated(ctx, x: int) -> int:\n"
        "    first = await double(ctx, x)\n"
        "    await ctx.wait_event('open')\n"
        "    return first + 1"
    )
    ip.run(
        "import asyncio\nawait rn.current_app().start(gated, 5, instance_id='old-1')\n"
        "while rn.current_app().get_instance('old-1').status != 'waiting_for_event':\n"
        "    await asyncio.sleep(0.01)"
    )
    # A compatible edit: the recorded step is asked for again; only the tail changes.
    capsys.readouterr()
    ip.run(
        "%%workflow\nasync def gated(ctx, x: int) -> int:\n"
        "    first = await double(ctx, x)\n"
        "    await ctx.wait_event('open')\n"
        "    return first + 1000"
    )
    note = capsys.readouterr().out
    assert "gated: new code version" in note
    assert "1 unfinished instance(s) started with older code" in note
    ip.run("%romancy event open")
    assert ip.run("await rn.current_app().result('old-1', timeout=10)") == 1010
