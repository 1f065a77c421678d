"""Bad input and faults: each gives a clear error, and the store stays consistent.

DESIGN §3: "Bad input never corrupts state: unknown workflow, unserializable argument,
malformed event, wrong types → a clear error naming what was wrong; nothing half-written."
Names here start with ``faults_``: the registry is process-wide.
"""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path
from typing import Any

import apsw
import pytest
from pydantic import BaseModel

import romancy_nb as rn
from tests.conftest import TableReader
from tests.sql import append_row

# definitions


class FaultsOrder(BaseModel):
    item: str
    qty: int


@rn.workflow
async def faults_typed(ctx: rn.WorkflowContext, n: int, order: FaultsOrder) -> str:
    return f"{type(order).__name__}:{order.item}x{order.qty}:{n + 1}"


@rn.activity
async def faults_take_any(ctx: rn.ActivityContext, value: Any) -> Any:
    return value


@rn.workflow
async def faults_pass_object(ctx: rn.WorkflowContext) -> str:
    # a storable value for an ``Any`` parameter is fine; an object() is not
    assert await faults_take_any(ctx, {"a": [1, "x"]}) == {"a": [1, "x"]}
    await faults_take_any(ctx, object())
    return "unreachable"


sockets: list[socket.socket] = []

USER_COLUMNS = "instance_id TEXT, step_id TEXT, note TEXT"
"""The user table the transactional activities write through ``ctx.session``."""


def _user_write(ctx: rn.ActivityContext, note: str) -> None:
    append_row(ctx.session, "faults_user_rows", USER_COLUMNS, (ctx.instance_id, ctx.step_id, note))


@rn.activity
def faults_sync_returns_socket(ctx: rn.ActivityContext, note: str) -> Any:
    _user_write(ctx, note)
    sock = socket.socket()
    sockets.append(sock)
    return sock


@rn.activity
async def faults_async_returns_object(ctx: rn.ActivityContext, note: str) -> Any:
    _user_write(ctx, note)
    return object()


@rn.activity
def faults_sync_write_ok(ctx: rn.ActivityContext, note: str) -> str:
    _user_write(ctx, note)
    return note


@rn.workflow
async def faults_bad_result(ctx: rn.WorkflowContext, which: str) -> str:
    await faults_sync_write_ok(ctx, "kept")
    if which == "sync":
        await faults_sync_returns_socket(ctx, "rolled back")
    else:
        await faults_async_returns_object(ctx, "rolled back")
    return "unreachable"


@rn.workflow
async def faults_echo(ctx: rn.WorkflowContext, text: str) -> str:
    return (await faults_sync_write_ok(ctx, text)) + "!"


# saga with a failing compensation

undone: list[str] = []


@rn.activity
async def faults_reserve_a(ctx: rn.ActivityContext, item: str) -> str:
    return f"A:{item}"


@faults_reserve_a.compensation(retry=rn.RetryPolicy.none())
async def faults_release_a(ctx: rn.ActivityContext, item: str) -> None:
    undone.append(f"A:{item}")
    raise RuntimeError("release of A broke")


@rn.activity
async def faults_reserve_b(ctx: rn.ActivityContext, item: str) -> str:
    return f"B:{item}"


@faults_reserve_b.compensation
async def faults_release_b(ctx: rn.ActivityContext, item: str) -> None:
    undone.append(f"B:{item}")


@rn.activity
async def faults_charge(ctx: rn.ActivityContext, item: str) -> str:
    raise rn.TerminalError(f"card declined for {item}")


@rn.workflow
async def faults_saga(ctx: rn.WorkflowContext, item: str) -> str:
    await faults_reserve_a(ctx, item)
    await faults_reserve_b(ctx, item)
    await faults_charge(ctx, item)
    return "unreachable"


# helpers


def _nothing_stored(app: rn.App) -> None:
    assert list(app.list_instances()) == []
    counts = app.store.table_counts()
    assert counts["workflow_instances"] == 0
    assert counts["workflow_history"] == 0
    assert counts["step_attempts"] == 0


def _create_user_table(db: Path) -> None:
    connection = apsw.Connection(str(db))
    connection.set_busy_timeout(5000)
    connection.execute(f"CREATE TABLE IF NOT EXISTS faults_user_rows ({USER_COLUMNS})")
    connection.close()


def _user_rows(table_rows: TableReader, instance_id: str) -> list[tuple[str, str]]:
    """The instance's rows of the user table, as (step_id, note), in the order written."""
    return [
        (step, note) for iid, step, note in table_rows("faults_user_rows") if iid == instance_id
    ]


# unknown workflow, wrong arguments


async def test_unknown_workflow_name_raises_and_stores_nothing(app: rn.App) -> None:
    with pytest.raises(rn.WorkflowNotFound) as info:
        await app.start("nope")
    assert "nope" in str(info.value)
    _nothing_stored(app)


@pytest.mark.parametrize(
    ("args", "kwargs", "mentions"),
    [
        pytest.param(("abc", {"item": "pen", "qty": 1}), {}, "n", id="str-for-int"),
        pytest.param((1, {"item": "pen"}), {}, "qty", id="model-missing-field"),
        pytest.param((1, {"item": "pen", "qty": "many"}), {}, "qty", id="model-bad-field"),
        pytest.param((1, "not an order"), {}, "order", id="str-for-model"),
        pytest.param((1,), {}, "order", id="missing-argument"),
        pytest.param((1, {"item": "pen", "qty": 1}), {"bogus": 2}, "bogus", id="unknown-keyword"),
    ],
)
async def test_wrong_arguments_raise_invalid_arguments_and_store_nothing(
    app: rn.App, args: tuple[Any, ...], kwargs: dict[str, Any], mentions: str
) -> None:
    with pytest.raises(rn.InvalidArgumentsError) as info:
        await app.start(faults_typed, *args, **kwargs)
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, rn.RomancyError)
    message = str(info.value)
    assert "faults_typed" in message
    assert mentions in message
    _nothing_stored(app)


async def test_valid_dict_is_coerced_into_the_pydantic_model(app: rn.App) -> None:
    iid = await app.start(faults_typed, 41, {"item": "pen", "qty": 2})
    assert await app.result(iid) == "FaultsOrder:penx2:42"
    info = app.get_instance(iid)
    assert info.status == "completed"
    assert info.input == {"n": 41, "order": {"item": "pen", "qty": 2}}
    # by keyword, and a numeric string coerced to the int the annotation asks for
    iid2 = await app.start(faults_typed, order={"item": "cup", "qty": "3"}, n="1")
    assert await app.result(iid2) == "FaultsOrder:cupx3:2"
    assert app.get_instance(iid2).input == {"n": 1, "order": {"item": "cup", "qty": 3}}


# unserializable arguments and results


async def test_unserializable_activity_argument_fails_the_instance_naming_the_activity(
    app: rn.App,
) -> None:
    iid = await app.start(faults_pass_object)
    with pytest.raises(rn.RomancyError) as info:
        await app.result(iid)
    error = info.value
    assert isinstance(error, TypeError)  # InvalidArgumentsError or SerializationError
    assert "faults_take_any" in str(error)
    assert "object" in str(error)
    record = app.get_instance(iid)
    assert record.status == "failed"
    assert "faults_take_any" in record.error["message"]
    # the first call (a storable value) ran and was recorded; the second never ran
    steps = [(s.step_id, s.status, s.output) for s in app.get_history(iid)]
    assert steps == [("faults_take_any:1", "completed", {"a": [1, "x"]})]
    # read back from the store, the same error class comes back
    with pytest.raises(type(error)):
        await app.result(iid)


@pytest.mark.parametrize(
    ("which", "activity_name", "type_name"),
    [
        ("sync", "faults_sync_returns_socket", "socket"),
        ("async", "faults_async_returns_object", "object"),
    ],
)
async def test_unserializable_result_fails_and_rolls_back_the_session(
    app: rn.App, table_rows: TableReader, which: str, activity_name: str, type_name: str
) -> None:
    try:
        iid = await app.start(faults_bad_result, which)
        with pytest.raises(rn.SerializationError) as info:
            await app.result(iid)
    finally:
        for sock in sockets:
            sock.close()
        sockets.clear()
    message = str(info.value)
    assert activity_name in message
    assert type_name in message

    record = app.get_instance(iid)
    assert record.status == "failed"
    assert record.error["type"].endswith("SerializationError")
    assert activity_name in record.error["message"]
    steps = {s.step_id: s for s in app.get_history(iid)}
    assert steps["faults_sync_write_ok:1"].status == "completed"
    assert steps[f"{activity_name}:1"].status == "failed"
    # the first activity's row committed with its step; the failing one's rolled back
    assert _user_rows(table_rows, iid) == [("faults_sync_write_ok:1", "kept")]

    # read back from the store: still a SerializationError naming the activity and type
    with pytest.raises(rn.SerializationError) as again:
        await app.result(iid)
    assert activity_name in str(again.value)
    assert type_name in str(again.value)


# files that are not databases


async def test_database_in_a_missing_folder_raises_store_error(tmp_path: Path) -> None:
    folder = tmp_path / "no" / "such" / "folder"
    with pytest.raises(rn.StoreError) as info:
        app = rn.App(folder / "romancy.db")
        await app.start(faults_echo, "x")
    assert str(folder) in str(info.value)
    assert not folder.exists()
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(random.Random(7).randbytes(8192), id="random-bytes"),
        pytest.param(b"order_id,item\n1,pen\n2,cup\n", id="csv-text"),
        pytest.param(b"{}", id="two-bytes"),
        pytest.param(b"\n", id="one-blank-line"),
    ],
)
async def test_a_file_that_is_not_a_database_raises_and_is_left_untouched(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(content)
    with pytest.raises(rn.StoreError) as info:
        app = rn.App(path)
        try:
            await app.start(faults_echo, "x")
        finally:
            await app.close()
    assert "not a SQLite database" in str(info.value)
    assert path.read_bytes() == content


# a database held by another writer


async def _release_later(locker: apsw.Connection, started: asyncio.Event) -> None:
    """Hold the write lock until the app has tried to write, then well past its busy
    timeout, then let go (as a long write transaction of another process would)."""
    await started.wait()
    await asyncio.sleep(0.6)
    locker.execute("ROLLBACK")
    locker.close()


@pytest.mark.sqlite_only  # SQLite's one write lock, taken from outside with apsw
async def test_a_start_while_another_process_holds_the_lock_waits_then_runs(
    db_path: Path, table_rows: TableReader
) -> None:
    # A lock held past the busy timeout is an infrastructure fault: the start waits for
    # it (on the loop, without blocking it) instead of failing; nothing is half-written.
    async with rn.App(db_path, busy_timeout=0.2) as app:
        _create_user_table(db_path)
        locker = apsw.Connection(str(db_path))
        locker.execute("BEGIN IMMEDIATE")
        tried = asyncio.Event()
        release = asyncio.create_task(_release_later(locker, tried))
        start = asyncio.create_task(
            app.start(faults_echo, "while locked", instance_id="faults-locked")
        )
        await asyncio.sleep(0)
        tried.set()
        ticks = 0
        while not release.done():  # the loop keeps running while the start waits
            ticks += 1
            await asyncio.sleep(0.01)
        assert ticks > 1
        iid = await start
        assert await app.result(iid) == "while locked!"
        assert [info.instance_id for info in app.list_instances()] == [iid]
        assert _user_rows(table_rows, iid) == [("faults_sync_write_ok:1", "while locked")]


@pytest.mark.sqlite_only  # SQLite's one write lock, taken from outside with apsw
async def test_an_app_opened_while_another_process_holds_the_lock_opens_once_it_is_free(
    db_path: Path,
) -> None:
    async with rn.App(db_path):  # the schema exists; another process now writes for long
        pass
    _create_user_table(db_path)
    locker = apsw.Connection(str(db_path))
    locker.execute("BEGIN IMMEDIATE")
    tried = asyncio.Event()
    release = asyncio.create_task(_release_later(locker, tried))
    app = rn.App(db_path, busy_timeout=0.2)
    try:
        start = asyncio.create_task(app.start(faults_echo, "after release"))
        await asyncio.sleep(0)
        tried.set()
        iid = await start
        await release
        assert await app.result(iid) == "after release!"
        assert [info.instance_id for info in app.list_instances()] == [iid]
        # The open that waited finished fully: this worker is registered (else another
        # process would take its running instances for orphans and run them too).
        workers = [w.worker_id for w in app.store.list_workers()]
        assert app.worker_id in workers
    finally:
        await app.close()


# a compensation that raises


async def test_failing_compensation_is_recorded_and_the_original_error_kept(
    app: rn.App,
) -> None:
    undone.clear()
    iid = await app.start(faults_saga, "pen")
    with pytest.raises(rn.TerminalError) as info:
        await app.result(iid)
    assert str(info.value) == "card declined for pen"

    record = app.get_instance(iid)
    assert record.status == "failed"
    assert record.error["type"].endswith("TerminalError")
    assert record.error["message"] == "card declined for pen"

    # B compensated first, then A (reverse order); A's compensation ran and failed
    assert undone == ["B:pen", "A:pen"]
    history = app.get_history(iid)
    compensations = [s for s in history if s.kind == "compensation"]
    assert [(s.step_id, s.status) for s in compensations] == [
        ("compensate:faults_reserve_b:1", "completed"),
        ("compensate:faults_reserve_a:1", "failed"),
    ]
    failed = compensations[1]
    assert "release of A broke" in str(failed.error)
    assert failed.name == "faults_reserve_a.compensation"
    seqs = {s.step_id: s.seq for s in history}
    assert (
        seqs["faults_reserve_a:1"]
        < seqs["faults_reserve_b:1"]
        < seqs["faults_charge:1"]
        < seqs["compensate:faults_reserve_b:1"]
        < seqs["compensate:faults_reserve_a:1"]
    )

    # from the store (as another process would see it): the original error again
    with pytest.raises(rn.TerminalError) as again:
        await app.result(iid)
    assert str(again.value) == "card declined for pen"
    assert undone == ["B:pen", "A:pen"]  # nothing re-ran


# effective settings


@rn.activity
def faults_session_pragmas(ctx: rn.ActivityContext) -> dict[str, Any]:
    def one(name: str) -> Any:
        return ctx.session.execute(f"PRAGMA {name}").fetchall()[0][0]

    return {
        "journal_mode": one("journal_mode"),
        "synchronous": one("synchronous"),
        "busy_timeout": one("busy_timeout"),
    }


@rn.workflow
async def faults_read_pragmas(ctx: rn.WorkflowContext) -> dict[str, Any]:
    return await faults_session_pragmas(ctx)


@pytest.mark.parametrize(
    ("options", "synchronous", "level", "busy_ms"),
    [
        pytest.param({}, "NORMAL", 1, 5000, id="defaults"),
        pytest.param({"synchronous": "FULL"}, "FULL", 2, 5000, id="full"),
        pytest.param({"busy_timeout": 0.25}, "NORMAL", 1, 250, id="busy-timeout"),
        pytest.param({"synchronous": "FULL", "busy_timeout": 12}, "FULL", 2, 12000, id="full-busy"),
    ],
)
@pytest.mark.sqlite_only  # SQLite's pragmas, on the engine's and the sessions' connections
async def test_effective_pragmas(
    db_path: Path, options: dict[str, Any], synchronous: str, level: int, busy_ms: int
) -> None:
    async with rn.App(db_path, **options) as app:
        settings = app.store.effective_settings()
        assert settings["journal_mode"] == "wal"
        assert settings["synchronous"] == synchronous
        # the engine's own connection waits only if the app asked it to (wait_for_locks)
        assert settings["busy_timeout"] == (busy_ms if app.store.wait_for_locks else 0)
        # the connections that transactional activities write through have them too
        seen = await app.result(await app.start(faults_read_pragmas))
        assert seen == {"journal_mode": "wal", "synchronous": level, "busy_timeout": busy_ms}
