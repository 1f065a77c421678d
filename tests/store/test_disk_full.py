"""A disk that fills and frees again: running instances resume by themselves (issue 8).

While a workflow runs steps the disk fills; SQLite answers ``SQLITE_FULL``; the engine
pauses (its writes retried, a transactional attempt run again) instead of failing the
instance or leaving it ``running`` until the process restarts. Once space is freed, the
same process finishes the instance: every step recorded once, no compensation.

Two ways to fill the disk, both real SQLite errors:

- a real small filesystem (a 4 MiB tmpfs mounted for the test, filled by a file and freed by
  deleting it): everything, sessions included, meets the full disk. Needs the right to mount
  (root); skipped with the reason when mounting is impossible;
- ``PRAGMA max_page_count`` on the engine's own connection, which makes SQLite raise
  ``SQLITE_FULL`` for real when that connection would grow the file; always runs. Sessions
  use other connections, so there only the engine's writes meet it.

A proxy around the real store (``tests/faults.py``), arming nothing, shows that the full
disk was really met before space is freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import romancy_nb as rn
from romancy_nb.errors import StoreError
from romancy_nb.testing import eventually
from tests.conftest import FAST_RETRY
from tests.faults import (
    FaultyStore,
    assert_completed_without_compensation,
    open_faulty,
)
from tests.sql import sqlite_rows

STEPS = 6
PAD = "x" * 4096
"""Each record needs new pages, so a full disk is met at once."""

bodies: Counter[tuple[str, str]] = Counter()
gates: dict[str, asyncio.Event] = {}


@rn.activity(transactional=False)
async def df_blob(ctx: rn.ActivityContext, n: int) -> str:
    bodies[(ctx.instance_id, ctx.step_id)] += 1
    return f"{n}:{PAD}"


@rn.activity
def df_row(ctx: rn.ActivityContext, n: int) -> int:
    ctx.session.execute(
        "CREATE TABLE IF NOT EXISTS df_ledger (instance_id TEXT, n INTEGER, pad TEXT)"
    )
    ctx.session.execute("INSERT INTO df_ledger VALUES (?, ?, ?)", (ctx.instance_id, n, PAD))
    return n


@rn.activity(transactional=False)
async def df_gate(ctx: rn.ActivityContext) -> None:
    await gates[ctx.instance_id].wait()


@rn.workflow
async def df_flow(ctx: rn.WorkflowContext, steps: int) -> int:
    total = await df_row(ctx, 0)
    await df_gate(ctx)
    for n in range(1, steps + 1):
        assert (await df_blob(ctx, n)).startswith(f"{n}:")
        total += await df_row(ctx, n)
    return total


def _full_disk_met(store: FaultyStore) -> list[BaseException]:
    return [e for e in store.real_errors() if isinstance(e, StoreError)]


async def _fill_and_free(
    store: FaultyStore, db_path: Path, fill: Callable[[], None], free: Callable[[], None]
) -> None:
    bodies.clear()
    iid = "df-instance"
    gates[iid] = asyncio.Event()
    async with rn.App(store, default_retry=FAST_RETRY, sweep_interval=0.05) as app:
        await app.start(df_flow, STEPS, instance_id=iid)
        await eventually(lambda: sqlite_rows(db_path, "df_ledger"), message="the first row")
        fill()
        gates[iid].set()  # the steps from here on meet the full disk
        await eventually(lambda: _full_disk_met(store), message="SQLITE_FULL under the engine")
        record = app.store.get_instance(iid)
        assert record is not None and record.status == "running", record
        assert [s.step_id for s in app.get_history(iid) if s.kind == "compensation"] == []

        free()
        assert await app.result(iid, timeout=30) == sum(range(STEPS + 1))
        assert_completed_without_compensation(app, iid)
        assert bodies == Counter({(iid, f"df_blob:{n}"): 1 for n in range(1, STEPS + 1)})
        steps = [s.step_id for s in app.get_history(iid)]
        assert len(steps) == len(set(steps)) == 2 + 2 * STEPS
    rows = [(row[0], row[1]) for row in sqlite_rows(db_path, "df_ledger")]
    assert rows == [(iid, n) for n in range(STEPS + 1)], "a session's row was lost or doubled"


# a real small filesystem


def _mount_tmpfs(where: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` on ``where``; None if mounted, else why not."""
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as error:
        return str(error)
    if done.returncode != 0:
        return done.stderr.strip() or f"mount exited with {done.returncode}"
    return None


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "small-disk"
    where.mkdir()
    reason = _mount_tmpfs(where, "4m")
    if reason is not None:
        pytest.skip(
            f"cannot mount a small filesystem here ({reason}); "
            "test_a_database_that_reaches_its_page_limit_resumes_once_raised covers disk-full"
        )
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(filler: Path) -> None:
    """Write ``filler`` until the filesystem has no byte left."""
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        chunk = b"\0" * 65536
        while True:
            os.write(fd, chunk)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


async def test_a_disk_that_fills_and_frees_again_resumes_the_instance(small_disk: Path) -> None:
    db_path = small_disk / "romancy.db"
    filler = small_disk / "filler"
    store = open_faulty(db_path, busy_timeout=1.0)
    try:
        await _fill_and_free(store, db_path, lambda: _fill(filler), filler.unlink)
    finally:
        store.inner.close()


# the page limit of the engine's connection


@pytest.mark.sqlite_only  # PRAGMA max_page_count on the engine's SQLite connection
async def test_a_database_that_reaches_its_page_limit_resumes_once_raised(db_path: Path) -> None:
    store = open_faulty(db_path, busy_timeout=1.0)
    engine = store.inner.connection  # the engine's own connection (SqliteStore, for tests)

    def cap() -> None:
        pages = engine.execute("PRAGMA page_count").fetchall()[0][0]
        engine.execute(f"PRAGMA max_page_count = {pages}").fetchall()

    def uncap() -> None:
        engine.execute("PRAGMA max_page_count = 4294967294").fetchall()

    try:
        await _fill_and_free(store, db_path, cap, uncap)
    finally:
        store.inner.close()
