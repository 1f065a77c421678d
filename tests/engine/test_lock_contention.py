"""The event loop never waits on SQLite's lock, and a lock is never a workflow failure.

SQLite has one writer at a time. The holder may be another process, or a transactional
activity of this process that keeps ``ctx.session`` open across an ``await`` or past its
``timeout=``. None of these may fail a workflow, run its compensations, or make the event
loop busy-wait inside SQLite (which stalls every other instance — with ``busy_timeout=1.0``
a 0.2 s await once took 14 s and left another instance stuck ``running``).

"The loop did not wait" is shown structurally, not by timing: the test makes SQLite's
default VFS a thin Python subclass of it that records every ``xSleep`` (SQLite's busy
handler sleeps through its VFS while it waits for a lock) with the thread that slept.
The event-loop thread must never appear there.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import apsw
import pytest

import romancy_nb as rn
from romancy_nb.errors import DatabaseLockedError
from romancy_nb.store import InstanceQuery
from romancy_nb.testing import eventually
from tests.conftest import FAST_RETRY, TableReader
from tests.faults import (
    FaultyStore,
    assert_completed_without_compensation,
    open_faulty,
)
from tests.sql import append_row

bodies: Counter[tuple[str, str]] = Counter()
undone: Counter[str] = Counter()
gates: dict[str, asyncio.Event] = {}


def _ledger(ctx: rn.ActivityContext, note: str) -> None:
    append_row(
        ctx.session,
        "lc_ledger",
        "instance_id TEXT, step_id TEXT, note TEXT",
        (ctx.instance_id, ctx.step_id, note),
    )


@rn.activity
def lc_reserve(ctx: rn.ActivityContext, item: str) -> str:
    _ledger(ctx, item)
    return item


@lc_reserve.compensation
def lc_release(ctx: rn.ActivityContext, item: str) -> None:
    undone[item] += 1


@rn.activity(transactional=False)
async def lc_gate(ctx: rn.ActivityContext) -> None:
    await gates[ctx.instance_id].wait()


@rn.activity(transactional=False)
async def lc_step(ctx: rn.ActivityContext, n: int) -> int:
    bodies[(ctx.instance_id, ctx.step_id)] += 1
    return n


@rn.workflow
async def lc_flow(ctx: rn.WorkflowContext, steps: int, gated: bool = False) -> int:
    await lc_reserve(ctx, "seat")
    if gated:
        await lc_gate(ctx)
    total = 0
    for n in range(steps):
        total += await lc_step(ctx, n)
    return total


class SleepRecorder(apsw.VFS):
    """SQLite's default VFS, recording who sleeps in it (the busy handler's waits).

    Each sleep keeps the thread and the romancy_nb frames that led to it, so a failure
    names the engine call that busy-waited.
    """

    def __init__(self) -> None:
        self.sleeps: list[tuple[int, str]] = []
        super().__init__("lc-sleep-recorder", base="", makedefault=True)

    def xSleep(self, microseconds: int) -> int:
        frames = [
            f"{Path(f.filename).name}:{f.lineno} {f.name}"
            for f in traceback.extract_stack()
            if "romancy_nb" in f.filename
        ]
        self.sleeps.append((threading.get_ident(), " <- ".join(reversed(frames))))
        return super().xSleep(microseconds)

    def on(self, thread: int) -> Counter[str]:
        """Where the given thread slept in SQLite, and how often."""
        return Counter(where for ident, where in self.sleeps if ident == thread)


def _busy_wait_once(path: Path) -> None:
    """Make SQLite busy-wait once on this thread (proof that the recorder sees it)."""
    holder = apsw.Connection(str(path))
    waiter = apsw.Connection(str(path))
    try:
        holder.execute("BEGIN IMMEDIATE")
        waiter.set_busy_timeout(20)
        with pytest.raises(apsw.BusyError):
            waiter.execute("BEGIN IMMEDIATE")
        holder.execute("ROLLBACK")
    finally:
        waiter.close()
        holder.close()


@pytest.fixture
def sleeps(tmp_path: Path) -> Iterator[SleepRecorder]:
    previous = apsw.vfs_names()[0]
    recorder = SleepRecorder()
    try:
        _busy_wait_once(tmp_path / "probe.db")
        assert recorder.on(threading.get_ident()), "the recorder missed a busy wait"
        recorder.sleeps.clear()
        yield recorder
    finally:  # every connection through it is closed by now (the store fixture's, too)
        recorder.unregister()
        apsw.set_default_vfs(previous)


@pytest.fixture
def faulty(sleeps: SleepRecorder, db_path: Path) -> Iterator[Callable[[float], FaultyStore]]:
    """Opens the real store (engine connection not waiting for locks) behind the proxy."""
    bodies.clear()
    undone.clear()
    opened: list[FaultyStore] = []

    def open_with(busy_timeout: float) -> FaultyStore:
        opened.append(open_faulty(db_path, busy_timeout=busy_timeout))
        return opened[-1]

    yield open_with
    for store in opened:
        store.inner.close()


def _locks_met(store: FaultyStore) -> list[BaseException]:
    return [e for e in store.real_errors() if isinstance(e, DatabaseLockedError)]


def _check(app: rn.App, table_rows: TableReader, iid: str, steps: int) -> None:
    assert_completed_without_compensation(app, iid)
    assert {key: n for key, n in bodies.items() if key[0] == iid} == {
        (iid, f"lc_step:{n + 1}"): 1 for n in range(steps)
    }
    assert [row for row in table_rows("lc_ledger") if row[0] == iid] == [
        (iid, "lc_reserve:1", "seat")
    ]
    assert undone == Counter(), "a lock ran the saga's compensations"


# another process holds the write lock


LOCKER = """
import sys, time, apsw
connection = apsw.Connection(sys.argv[1])
connection.set_busy_timeout(10_000)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("ROLLBACK")
"""


@pytest.mark.sqlite_only  # the VFS recorder; an apsw process holds SQLite's write lock
@pytest.mark.parametrize("hold", [0.3, 1.0], ids=["hold-0.3s", "hold-1s"])
async def test_a_write_lock_held_by_another_process_pauses_the_workflow(
    faulty: Callable[[float], FaultyStore],
    db_path: Path,
    table_rows: TableReader,
    sleeps: SleepRecorder,
    hold: float,
) -> None:
    # Before the fix, depending on when the lock ended, the instance failed and ran its
    # compensation, or raised DatabaseLockedError and stayed leased with no task.
    store = faulty(0.2)
    async with rn.App(store, default_retry=FAST_RETRY, sweep_interval=0.05) as app:
        iid = "lc-other-process"
        gates[iid] = asyncio.Event()
        await app.start(lc_flow, 5, True, instance_id=iid)
        await eventually(lambda: bodies == Counter() and table_rows("lc_ledger"))
        locker = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LOCKER, str(db_path), str(hold), stdout=asyncio.subprocess.PIPE
        )
        assert locker.stdout is not None
        try:
            assert await locker.stdout.readline() == b"locked\n"
            gates[iid].set()  # the steps from here on meet the other process's lock
            assert await app.result(iid, timeout=30) == sum(range(5))
        finally:
            await locker.wait()
        assert _locks_met(store), "the workflow never met the other process's lock"
        _check(app, table_rows, iid, 5)
    loop_sleeps = sleeps.on(threading.get_ident())
    assert loop_sleeps == Counter(), f"the event loop busy-waited on SQLite's lock: {loop_sleeps}"


# an async transactional activity holds its session across an await


ticks = Counter[str]()


@rn.activity
async def lc_hold(ctx: rn.ActivityContext, note: str) -> dict[str, int]:
    _ledger(ctx, note)  # BEGIN IMMEDIATE: this process now holds the write lock
    gates[note].set()
    before = ticks["loop"]
    await asyncio.sleep(0.2)
    return {"ticks": ticks["loop"] - before}


@rn.workflow
async def lc_holder(ctx: rn.WorkflowContext, note: str = "held") -> dict[str, int]:
    return await lc_hold(ctx, note)


async def _ticker() -> None:
    while True:
        ticks["loop"] += 1
        await asyncio.sleep(0.005)


@pytest.mark.sqlite_only  # the VFS recorder; SQLite's one write lock
async def test_a_session_held_across_an_await_does_not_stall_other_instances(
    faulty: Callable[[float], FaultyStore], table_rows: TableReader, sleeps: SleepRecorder
) -> None:
    store = faulty(1.0)
    gates["held"] = asyncio.Event()
    other = "lc-other-instance"
    gates[other] = asyncio.Event()
    ticker = asyncio.get_running_loop().create_task(_ticker())
    try:
        async with rn.App(store, default_retry=FAST_RETRY, sweep_interval=0.05) as app:
            await app.start(lc_flow, 5, True, instance_id=other)
            await eventually(lambda: table_rows("lc_ledger"))  # at its gate
            holder = await app.start(lc_holder)
            await asyncio.wait_for(gates["held"].wait(), 30)
            gates[other].set()  # its steps now meet the lock the holder keeps across await
            during = await app.result(holder, timeout=30)
            assert await app.result(other, timeout=30) == sum(range(5))

            assert _locks_met(store), "the other instance never met the held lock"
            assert during["ticks"] > 0, "the loop did not run while the activity awaited"
            assert_completed_without_compensation(app, holder)
            _check(app, table_rows, other, 5)
            rows = app.store.list_instances(InstanceQuery(limit=1000))
            statuses = {r.instance_id: r.status for r in rows}
            assert statuses == {holder: "completed", other: "completed"}
    finally:
        ticker.cancel()
    loop_sleeps = sleeps.on(threading.get_ident())
    assert loop_sleeps == Counter(), (
        f"the event loop busy-waited on SQLite's lock while a session held it: {loop_sleeps}"
    )


@pytest.mark.sqlite_only  # the VFS recorder; SQLite's one write lock
async def test_a_second_async_session_waits_for_the_first_without_blocking_the_loop(
    faulty: Callable[[float], FaultyStore], table_rows: TableReader, sleeps: SleepRecorder
) -> None:
    # The second activity's ctx.session (BEGIN IMMEDIATE, on the loop thread: the activity
    # is async) meets the lock the first keeps across its await.
    store = faulty(1.0)
    gates["first"], gates["second"] = asyncio.Event(), asyncio.Event()
    async with rn.App(store, default_retry=FAST_RETRY, sweep_interval=0.05) as app:
        first = await app.start(lc_holder, "first")
        await asyncio.wait_for(gates["first"].wait(), 30)
        second = await app.start(lc_holder, "second")
        await app.result(first, timeout=30)
        await app.result(second, timeout=30)
        for iid in (first, second):
            assert_completed_without_compensation(app, iid)
        notes = sorted(row[2] for row in table_rows("lc_ledger"))
        assert notes == ["first", "second"]
    loop_sleeps = sleeps.on(threading.get_ident())
    assert loop_sleeps == Counter(), f"the event loop busy-waited on SQLite's lock: {loop_sleeps}"


# a sync activity overran its timeout while holding its session


second_attempt = threading.Event()


@rn.activity(timeout=0.3, retry=rn.RetryPolicy.fixed(10, 0.01))
def lc_slow(ctx: rn.ActivityContext, note: str) -> int:
    if ctx.attempt > 1:
        second_attempt.set()
    append_row(
        ctx.session, "lc_slow", "instance_id TEXT, attempt INT", (ctx.instance_id, ctx.attempt)
    )
    # The first attempt overruns its timeout and, once the retry waits for the write lock,
    # holds it past the retry's busy timeout (0.2 s).
    if ctx.attempt == 1 and second_attempt.wait(1.0):
        time.sleep(0.6)
    return ctx.attempt


@rn.workflow
async def lc_slow_flow(ctx: rn.WorkflowContext) -> int:
    return await lc_slow(ctx, "slow")


async def test_a_retry_after_a_timed_out_attempt_holding_its_session_succeeds(
    store_url: str, table_rows: TableReader
) -> None:
    second_attempt.clear()
    async with rn.App(store_url, busy_timeout=0.2, sweep_interval=0.05) as app:
        iid = await app.start(lc_slow_flow)
        attempt = await app.result(iid, timeout=30)
        assert attempt > 1
        assert_completed_without_compensation(app, iid)
        errors = [json.loads(a.error) for a in app.store.load_attempts(iid)]
        assert errors, "the first attempt did not time out"
        assert errors[0]["type"].endswith("ActivityTimeoutError")
        locked = [e for e in errors if e["type"].endswith("DatabaseLockedError")]
        assert locked == [], f"a retry failed on the abandoned attempt's lock: {locked}"
    # the abandoned attempt's write rolled back; only the attempt that completed committed
    assert table_rows("lc_slow") == [(iid, attempt)]
