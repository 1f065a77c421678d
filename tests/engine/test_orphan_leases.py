"""No instance is ever leased without a task (issue 8).

Each test drives one way a lease could be left held by this worker with nothing running
the instance — the lease cannot be released after a store error, a run's task ends by an
unexpected error, this worker's own lease outlives its run, a wake-up commits and the store
fails right after — and checks that every instance still completes (each activity body
once) and that no row is left leased. Store rows are the evidence (status, lock_owner).
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

import romancy_nb as rn
from romancy_nb.errors import DatabaseLockedError, StoreError
from romancy_nb.store import InstanceQuery, InstanceRecord
from tests.conftest import FAST_RETRY
from tests.faults import FaultyStore, assert_completed_without_compensation, open_faulty

bodies: Counter[tuple[str, str]] = Counter()


@rn.activity(transactional=False)
async def orph_step(ctx: rn.ActivityContext, note: str) -> str:
    bodies[(ctx.instance_id, ctx.step_id)] += 1
    return note


@rn.workflow
async def orph_flow(ctx: rn.WorkflowContext, tag: str, sleep: bool = False) -> str:
    first = await orph_step(ctx, f"{tag}-1")
    if sleep:
        await ctx.sleep(0.05)
    return first + "+" + await orph_step(ctx, f"{tag}-2")


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What reached the event loop's exception handler (a done-callback that raised, a
    task whose exception nobody retrieved)."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: seen.append(context))
    yield seen
    loop.set_exception_handler(previous)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[FaultyStore]:
    bodies.clear()
    store = open_faulty(store_url, busy_timeout=1.0)
    try:
        yield store
    finally:
        store.inner.close()


def _app(db: FaultyStore | str) -> rn.App:
    return rn.App(db, default_retry=FAST_RETRY, sweep_interval=0.05)


async def _start_three(app: rn.App, *, sleep: bool = False) -> list[str]:
    return [await app.start(orph_flow, f"t{n}", sleep) for n in range(3)]


async def _all_complete(app: rn.App, iids: list[str]) -> None:
    for n, iid in enumerate(iids):
        assert await app.result(iid, timeout=30) == f"t{n}-1+t{n}-2"
    for iid in iids:
        assert_completed_without_compensation(app, iid)
        assert bodies[(iid, "orph_step:1")] == 1
        assert bodies[(iid, "orph_step:2")] == 1
    rows = app.store.list_instances(InstanceQuery(limit=1000))
    leased = [r.instance_id for r in rows if r.lock_owner is not None]
    assert leased == [], f"left leased: {leased}"


@pytest.mark.parametrize("release_error", [StoreError, DatabaseLockedError])
async def test_a_lease_that_cannot_be_released_after_a_store_error_is_resumed_here(
    store: FaultyStore, loop_errors: list[dict[str, Any]], release_error: type[StoreError]
) -> None:
    # finish fails for good, so the run stops and gives its lease back from an except
    # clause — and that release fails too: the lease stays with this worker, no task.
    async with _app(store) as app:
        finish = store.fail("finish_instance", StoreError)
        release = store.fail("release_instance", release_error, times=3)
        await _all_complete(app, await _start_three(app))
        assert finish.hits == 1
        assert release.hits >= 1, "the run never tried to give its lease back"
    gc.collect()
    assert loop_errors == []


async def test_a_run_ended_by_an_unexpected_engine_error_is_resumed_and_nothing_escapes(
    store: FaultyStore, loop_errors: list[dict[str, Any]]
) -> None:
    # Not a StoreError: an engine bug (here, a store raising what it never should) that
    # even the release in the error path meets, so the run's task itself ends by it.
    async with _app(store) as app:
        finish = store.fail("finish_instance", RuntimeError)
        store.fail("release_instance", RuntimeError, times=3)
        await _all_complete(app, await _start_three(app))
        assert finish.hits == 1
    gc.collect()
    assert loop_errors == [], "a run's error reached the event loop (a callback re-raised)"


async def test_recovery_resumes_this_workers_own_lease_that_has_no_task(store_url: str) -> None:
    # The state any of the paths above leaves: a running instance leased by this very
    # worker, with nothing running it. Made here directly, with the real store.
    bodies.clear()
    async with _app(store_url) as app:
        now = time.time()
        orphans = [f"own-orphan-{n}" for n in range(2)]
        for n, iid in enumerate(orphans):
            record = InstanceRecord(
                iid,
                orph_flow.name,
                "running",
                json.dumps({"tag": f"t{n}", "sleep": False}),
                None,
                None,
                app.worker_id,
                None,
                orph_flow.code_version,
                now,
                now,
            )
            assert app.store.create_instance(record)
        started = await app.start(orph_flow, "t2", False)
        await _all_complete(app, [*orphans, started])


@pytest.mark.parametrize("error", [DatabaseLockedError, StoreError])
async def test_a_store_error_after_a_wake_up_committed_still_runs_the_instance(
    store: FaultyStore, loop_errors: list[dict[str, Any]], error: type[StoreError]
) -> None:
    # wake() commits (the instance is running, leased to this worker) and then raises:
    # the caller cannot tell that its wake-up landed.
    async with _app(store) as app:
        wake = store.fail("wake", error, after=True)
        await _all_complete(app, await _start_three(app, sleep=True))
        assert wake.hits == 1
    gc.collect()
    assert loop_errors == []
