"""Transactional activities: ctx.session commits with the history record, or not at all."""

from __future__ import annotations

import asyncio
from pathlib import Path

import apsw
import pytest

import romancy_nb as rn
from romancy_nb.testing import eventually
from tests.conftest import TableReader
from tests.sql import append_row

held: dict[str, asyncio.Event] = {}


def _ledger(ctx: rn.ActivityContext, note: str) -> None:
    append_row(
        ctx.session,
        "tx_ledger",
        "instance_id TEXT, step_id TEXT, note TEXT",
        (ctx.instance_id, ctx.step_id, note),
    )


@rn.activity
def tx_write(ctx: rn.ActivityContext, note: str) -> str:
    _ledger(ctx, note)
    return note


@rn.activity
def tx_write_then_fail_once(ctx: rn.ActivityContext, note: str) -> str:
    _ledger(ctx, f"{note} attempt {ctx.attempt}")
    if ctx.attempt == 1:
        raise RuntimeError("fails after writing")
    return note


@rn.activity
async def tx_async_write(ctx: rn.ActivityContext, note: str) -> str:
    _ledger(ctx, note)
    return note


@rn.activity(transactional=False)
def tx_plain(ctx: rn.ActivityContext) -> None:
    ctx.session.execute("SELECT 1")


@rn.activity
async def tx_idle(ctx: rn.ActivityContext) -> str:
    await held["idle"].wait()
    return "done"


@rn.workflow
async def tx_flow(ctx: rn.WorkflowContext, which: str) -> object:
    if which == "write":
        return [await tx_write(ctx, "one"), await tx_async_write(ctx, "two")]
    if which == "retry":
        return await tx_write_then_fail_once(ctx, "x")
    if which == "plain":
        return await tx_plain(ctx)
    return await tx_idle(ctx)


async def test_session_writes_commit_with_the_step(app: rn.App, table_rows: TableReader) -> None:
    iid = await app.start(tx_flow, "write")
    assert await app.result(iid) == ["one", "two"]
    assert table_rows("tx_ledger") == [
        (iid, "tx_write:1", "one"),
        (iid, "tx_async_write:1", "two"),
    ]


async def test_a_failed_attempt_rolls_back_its_writes(app: rn.App, table_rows: TableReader) -> None:
    iid = await app.start(tx_flow, "retry")
    assert await app.result(iid) == "x"
    assert table_rows("tx_ledger") == [(iid, "tx_write_then_fail_once:1", "x attempt 2")]


async def test_non_transactional_activity_has_no_session(app: rn.App) -> None:
    iid = await app.start(tx_flow, "plain")
    with pytest.raises(rn.RetryExhaustedError) as caught:
        await app.result(iid)
    assert "transactional=False" in caught.value.attempts[0].message


@pytest.mark.sqlite_only  # SQLite's one write lock, taken from outside with apsw
async def test_an_activity_that_never_uses_the_session_holds_no_write_lock(
    app: rn.App, db_path: Path
) -> None:
    held["idle"] = asyncio.Event()
    iid = await app.start(tx_flow, "idle")
    await eventually(lambda: app.get_instance(iid).status == "running")
    await asyncio.sleep(0)  # let the activity start
    other = apsw.Connection(str(db_path))
    other.execute("BEGIN IMMEDIATE")  # would fail with BusyError if the activity held it
    other.execute("ROLLBACK")
    held["idle"].set()
    assert await app.result(iid) == "done"
