"""Stored errors rebuilt: the same class where this process knows it, never an import.

A stored error's ``type`` is text in the database file. Rebuilding it must not import the
module it names (that would run code on the database's say-so): a crafted row naming a
module whose import leaves a marker file is read by ``app.result`` and by replay, and the
marker must not appear.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import apsw
import pytest

import romancy_nb as rn
from romancy_nb.engine.failures import error_from_json, error_to_json, register_error
from romancy_nb.testing import eventually

PLANTED = "romancy_planted_errors"
"""A module in tmp_path that nothing imports; importing it writes ``imported.marker``."""


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The marker file the planted module would write; the module is importable."""
    (tmp_path / f"{PLANTED}.py").write_text(
        "import pathlib\n"
        "pathlib.Path(__file__).with_name('imported.marker').write_text('imported')\n"
        "class Boom(Exception):\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, PLANTED, raising=False)
    return tmp_path / "imported.marker"


def _stored(type_path: str, message: str = "boom") -> str:
    return json.dumps({"type": type_path, "message": message, "traceback": "tb", "fields": {}})


def _rewrite(db: Path, sql: str, *args: object) -> None:
    """Edit the store from outside the engine, as someone handing over a crafted file."""
    connection = apsw.Connection(str(db))
    connection.set_busy_timeout(10_000)
    try:
        connection.execute(sql, args)
    finally:
        connection.close()


# the crafted database


@rn.activity
async def fl_refuse(ctx: rn.ActivityContext) -> str:
    raise rn.TerminalError("refused")


@rn.workflow
async def fl_fails(ctx: rn.WorkflowContext) -> str:
    return await fl_refuse(ctx)


@rn.workflow
async def fl_catches(ctx: rn.WorkflowContext) -> str:
    try:
        await fl_refuse(ctx)
    except Exception as error:
        caught = type(error).__name__
    await ctx.wait_event("fl.go")
    return caught


@pytest.mark.sqlite_only  # crafts the file with SQLite's json_set, from outside
async def test_result_does_not_import_the_module_a_stored_error_names(
    app: rn.App, db_path: Path, planted: Path
) -> None:
    iid = await app.start(fl_fails)
    with pytest.raises(rn.TerminalError):
        await app.result(iid)
    _rewrite(
        db_path,
        "UPDATE workflow_instances SET error = json_set(error, '$.type', ?) WHERE instance_id = ?",
        f"{PLANTED}.Boom",
        iid,
    )
    with pytest.raises(rn.WorkflowFailed) as caught:
        await app.result(iid)
    assert caught.value.error_type == f"{PLANTED}.Boom"
    assert f"{PLANTED}.Boom" in str(caught.value)
    assert not planted.exists()
    assert PLANTED not in sys.modules


@pytest.mark.sqlite_only  # crafts the file with SQLite's json_set, from outside
async def test_replay_does_not_import_the_module_a_stored_step_error_names(
    app: rn.App, db_path: Path, planted: Path
) -> None:
    iid = await app.start(fl_catches)
    await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
    _rewrite(
        db_path,
        "UPDATE workflow_history SET error = json_set(error, '$.type', ?) "
        "WHERE instance_id = ? AND status = 'failed'",
        f"{PLANTED}.Boom",
        iid,
    )
    await app.send_event("fl.go", None)
    assert await app.result(iid, timeout=30) == "WorkflowFailed"  # replayed, not rebuilt
    assert not planted.exists()
    assert PLANTED not in sys.modules


# which classes are rebuilt


class KnownError(Exception):
    """Defined in a loaded module (this one): rebuilt as itself."""


class Outer:
    class Nested(ValueError):
        pass


def test_builtin_own_and_loaded_classes_are_rebuilt_as_themselves() -> None:
    for error in (ValueError("v"), rn.TerminalError("t"), KnownError("x"), Outer.Nested("n")):
        rebuilt = error_from_json(error_to_json(error))
        assert type(rebuilt) is type(error)
        assert str(rebuilt) == str(error)


def test_a_class_of_an_unloaded_module_is_workflow_failed_naming_it(planted: Path) -> None:
    rebuilt = error_from_json(_stored(f"{PLANTED}.Boom", "went wrong"))
    assert isinstance(rebuilt, rn.WorkflowFailed)
    assert rebuilt.error_type == f"{PLANTED}.Boom"
    assert str(rebuilt) == f"{PLANTED}.Boom: went wrong"
    assert not planted.exists()


def test_a_registered_class_is_rebuilt_though_its_module_is_not_loaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = types.ModuleType("romancy_gone_module")
    exec("class Gone(Exception):\n    pass\n", module.__dict__)
    gone = module.Gone
    register_error(gone)
    monkeypatch.delitem(sys.modules, "romancy_gone_module", raising=False)
    rebuilt = error_from_json(_stored("romancy_gone_module.Gone"))
    assert type(rebuilt) is gone
    with pytest.raises(TypeError, match="Exception subclass"):
        register_error(int)  # type: ignore[arg-type]


def test_a_modules_lazy_getattr_is_not_called(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    lazy = types.ModuleType("romancy_lazy_module")

    def __getattr__(name: str) -> type[Exception]:
        asked.append(name)
        return KnownError

    lazy.__getattr__ = __getattr__  # type: ignore[method-assign]
    monkeypatch.setitem(sys.modules, "romancy_lazy_module", lazy)
    assert isinstance(error_from_json(_stored("romancy_lazy_module.Anything")), rn.WorkflowFailed)
    assert asked == []


@pytest.mark.parametrize(
    "type_path",
    [
        "builtins.SystemExit",
        "builtins.KeyboardInterrupt",
        "romancy_nb.engine.signals.SuspendSignal",
        "builtins.len",
        "tests.engine.test_failures.Outer",
        "tests.engine.test_failures.fl_catches.<locals>.Error",
        "NoModule",
        "",
    ],
)
def test_control_flow_and_non_errors_are_never_rebuilt(type_path: str) -> None:
    rebuilt = error_from_json(_stored(type_path))
    assert isinstance(rebuilt, rn.WorkflowFailed)
    assert rebuilt.error_type == type_path
