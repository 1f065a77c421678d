"""Time travel is atomic: a store fault in the middle leaves the old state or the new one.

``rewind``, ``rollback`` and ``retry`` apply their decision in one store call
(``Store.cut_history``), ``fork`` in another (``Store.fork_instance``). Those calls are made
to fail here (``tests/faults.py``): before they run (a non-transient store error: nothing
may be written) and after they committed (``after=True``: all of it is written, the caller
just does not know). The proof is a dump of the instance's rows in every table that holds
them, compared before and after. In both cases the lease is given back, so the instance can
be changed again (and, when the change landed, the instance goes on by itself). A transient
lock error is retried by the store gate and the operation succeeds.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

import romancy_nb as rn
from romancy_nb.errors import DatabaseLockedError, StoreError
from romancy_nb.testing import eventually
from tests.conftest import FAST_RETRY, TableReader
from tests.faults import Arguments, FaultyStore, dump, open_faulty
from tests.sql import append_row

FORWARD = ["ttf_step:1", "subscribe:1", "join_group:1", "ttf_step:2"]
"""The history of a ``ttf_flow`` waiting for its event (the wait is recorded when it ends)."""

done: Counter[tuple[str, str]] = Counter()
"""How often each (instance, step) of ``ttf_step`` ran."""

undone: Counter[tuple[str, str]] = Counter()
"""How often each (instance, step) was compensated."""


@pytest.fixture(autouse=True)
def _fresh_counts() -> None:
    """Instance ids repeat across backends: each test counts from zero."""
    done.clear()
    undone.clear()


@rn.activity(transactional=False)
async def ttf_step(ctx: rn.ActivityContext, note: str) -> str:
    done[(ctx.instance_id, ctx.step_id)] += 1
    return note


@ttf_step.compensation
async def ttf_undo(ctx: rn.ActivityContext, note: str) -> None:
    undone[(ctx.instance_id, ctx.step_id)] += 1


@rn.activity(transactional=False)
async def ttf_boom(ctx: rn.ActivityContext, fail: bool) -> str:
    if fail:
        raise rn.TerminalError("ttf_boom fails on purpose")
    return "fine"


@rn.workflow
async def ttf_flow(ctx: rn.WorkflowContext, tag: str) -> list[str]:
    """A step, then a channel and a group (so a cut must change what it listens on and
    belongs to), another step, and a wait: the instance rests ``waiting_for_event``."""
    out = [await ttf_step(ctx, "a")]
    await ctx.subscribe(f"{tag}.ch", "broadcast")
    await ctx.join_group(f"{tag}.group")
    out.append(await ttf_step(ctx, "b"))
    event = await ctx.wait_event(f"{tag}.go")
    out.append(event.data)
    return out


@rn.workflow
async def ttf_failing(ctx: rn.WorkflowContext, fail: bool) -> list[str]:
    """Fails at its second step (when ``fail``), after compensating its first."""
    return [await ttf_step(ctx, "a"), await ttf_boom(ctx, fail)]


FAULTED = {
    "rewind": lambda app, iid: app.rewind(iid, to="ttf_step:1"),
    "rollback": lambda app, iid: app.rollback(iid, to="ttf_step:1"),
    "fork": lambda app, iid: app.fork(iid, at="ttf_step:1"),
}


@pytest.mark.parametrize("operation", sorted(FAULTED))
async def test_a_store_fault_under_time_travel_reaches_the_caller_as_a_store_error(
    faulty: tuple[FaultyStore, rn.App], operation: str
) -> None:
    store, app = faulty
    iid = f"ttf-error-{operation}"
    await _waiting(app, iid)
    store.fail("fork_instance" if operation == "fork" else "cut_history", StoreError)
    with pytest.raises(StoreError, match="injected fault"):
        await FAULTED[operation](app, iid)


async def test_a_rollback_reports_the_steps_it_kept_not_those_run_again_since(
    app: rn.App,
) -> None:
    iid = "ttf-kept"
    await _waiting(app, iid)
    change = await app.rollback(iid, to="ttf_step:1")
    assert change.compensated == ["ttf_step:2"]
    assert change.archived == ["subscribe:1", "join_group:1", "ttf_step:2"]
    assert change.kept == ["ttf_step:1"]


@pytest.fixture
async def faulty(store_url: str) -> AsyncIterator[tuple[FaultyStore, rn.App]]:
    store = open_faulty(store_url)
    async with rn.App(store, default_retry=FAST_RETRY, sweep_interval=0.05) as app:
        yield store, app


async def _waiting(app: rn.App, instance_id: str) -> None:
    await app.start(ttf_flow, instance_id, instance_id=instance_id)
    await eventually(
        lambda: app.get_instance(instance_id).status == "waiting_for_event",
        message=f"{instance_id} waiting for its event",
    )


def _rewind(app: rn.App, iid: str) -> Any:
    return app.rewind(iid, to="ttf_step:1")


def _rollback(app: rn.App, iid: str) -> Any:
    return app.rollback(iid, to="ttf_step:1")


CUTS = {"rewind": _rewind, "rollback": _rollback}


@pytest.mark.parametrize("operation", sorted(CUTS))
async def test_a_cut_that_fails_before_it_runs_leaves_the_instance_as_it_was(
    faulty: tuple[FaultyStore, rn.App], operation: str
) -> None:
    store, app = faulty
    iid = f"ttf-before-{operation}"
    await _waiting(app, iid)
    before = dump(store, iid)
    fault = store.fail("cut_history", StoreError)

    with pytest.raises(StoreError, match="injected fault"):
        await CUTS[operation](app, iid)

    assert fault.hits == 1
    assert dump(store, iid) == before  # lease given back: even lock_owner is as it was
    assert app.running() == []
    assert undone[(iid, "compensate:ttf_step:2")] == 0

    # Nothing is held: the same operation now goes through, and the instance goes on.
    await CUTS[operation](app, iid)
    await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
    runs = [(r.status, r.cut_after) for r in app.archived_runs(iid)]
    assert runs == [("rewound" if operation == "rewind" else "rolled_back", "ttf_step:1")]
    assert done[(iid, "ttf_step:2")] == 2  # once before, once after the cut


@pytest.mark.parametrize("operation", sorted(CUTS))
async def test_a_cut_that_fails_after_it_committed_leaves_the_new_state_and_goes_on(
    faulty: tuple[FaultyStore, rn.App], operation: str
) -> None:
    store, app = faulty
    iid = f"ttf-after-{operation}"
    await _waiting(app, iid)
    before = dump(store, iid)
    kept = [row for row in before["workflow_history"] if row[2] == "ttf_step:1"]
    first = store.fail("cut_history", StoreError, after=True)

    with pytest.raises(StoreError, match="injected fault"):
        await CUTS[operation](app, iid)

    assert first.hits == 1
    # The whole change landed: one archived run, the later history moved into it, the
    # wait, the channel and the group gone. The lease was given back; this worker's sweep
    # resumes the instance (a rollback: its compensations first) and it waits again.
    await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
    after = dump(store, iid)
    runs = after["workflow_runs_archive"]
    assert len(runs) == 1
    steps = [row[2] for row in sorted(after["workflow_history"], key=lambda r: r[1])]
    assert steps == FORWARD
    assert [row for row in after["workflow_history"] if row[2] == "ttf_step:1"] == kept
    assert done[(iid, "ttf_step:1")] == 1
    assert done[(iid, "ttf_step:2")] == 2
    expected_undos = 1 if operation == "rollback" else 0
    assert undone[(iid, "compensate:ttf_step:2")] == expected_undos

    # And it can be changed again.
    change = await _rewind(app, iid)
    assert change.kept == ["ttf_step:1"]
    await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
    assert len(app.archived_runs(iid)) == 2


async def test_a_retry_whose_cut_fails_leaves_the_instance_failed(
    faulty: tuple[FaultyStore, rn.App],
) -> None:
    store, app = faulty
    iid = "ttf-retry"
    await app.start(ttf_failing, True, instance_id=iid)
    with pytest.raises(rn.TerminalError):
        await app.result(iid)
    before = dump(store, iid)
    store.fail("cut_history", StoreError)

    with pytest.raises(StoreError, match="injected fault"):
        await app.retry(iid)

    assert dump(store, iid) == before
    change = await app.retry(iid)
    assert change.kept == []  # ttf_step:1 was compensated: it runs again
    await eventually(lambda: app.get_instance(iid).status == "failed")


async def test_the_final_cut_of_a_rollback_failing_pauses_it_without_undoing_twice(
    faulty: tuple[FaultyStore, rn.App],
) -> None:
    # The rollback's second transaction (after the compensations ran) fails once: the run
    # pauses, is resumed by the sweep, and cuts; no compensation runs a second time.
    store, app = faulty
    iid = "ttf-final-cut"
    await _waiting(app, iid)

    def final(arguments: Arguments) -> bool:
        return arguments["cut"].marker is None and arguments["cut"].archived_as == "rolled_back"

    fault = store.fail("cut_history", StoreError, when=final)
    await app.rollback(iid, to="ttf_step:1")

    await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
    assert fault.hits == 1
    assert undone[(iid, "compensate:ttf_step:2")] == 1
    assert [r.status for r in app.archived_runs(iid)] == ["rolled_back"]
    steps = [s.step_id for s in app.get_history(iid)]
    assert steps == FORWARD


async def test_a_transient_lock_on_the_cut_is_retried_and_the_rewind_succeeds(
    faulty: tuple[FaultyStore, rn.App],
) -> None:
    store, app = faulty
    iid = "ttf-locked"
    await _waiting(app, iid)
    fault = store.fail("cut_history", DatabaseLockedError, times=3)

    change = await app.rewind(iid, to="ttf_step:1")

    assert fault.hits == 3
    assert [c.error is None for c in store.calls("cut_history")] == [False] * 3 + [True]
    assert (change.kept, change.archived_run) == (["ttf_step:1"], 1)
    await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")


async def test_a_fork_that_fails_writes_nothing_and_leaves_the_original_alone(
    faulty: tuple[FaultyStore, rn.App],
) -> None:
    store, app = faulty
    iid = "ttf-fork-src"
    await _waiting(app, iid)
    original = dump(store, iid)
    store.fail("fork_instance", StoreError)

    with pytest.raises(StoreError, match="injected fault"):
        await app.fork(iid, at="ttf_step:2", instance_id="ttf-fork-1")

    assert all(rows == [] for rows in dump(store, "ttf-fork-1").values())
    assert dump(store, iid) == original
    # The id is free: the same fork now goes through.
    assert await app.fork(iid, at="ttf_step:2", instance_id="ttf-fork-1") == "ttf-fork-1"
    await eventually(lambda: app.get_instance("ttf-fork-1").status == "waiting_for_event")
    assert dump(store, iid) == original


async def test_a_fork_that_fails_after_it_committed_is_run_by_this_worker(
    faulty: tuple[FaultyStore, rn.App],
) -> None:
    # The fork's row and history landed but the caller got an error and launched no run:
    # the fork is leased to this worker with no run, which its recovery resumes.
    store, app = faulty
    iid = "ttf-fork-src-after"
    await _waiting(app, iid)
    original = dump(store, iid)
    store.fail("fork_instance", StoreError, after=True)

    with pytest.raises(StoreError, match="injected fault"):
        await app.fork(iid, at="ttf_step:2", instance_id="ttf-fork-2")

    await eventually(lambda: app.get_instance("ttf-fork-2").status == "waiting_for_event")
    fork = app.get_instance("ttf-fork-2")
    assert (fork.forked_from, fork.forked_at) == (iid, "ttf_step:2")
    assert dump(store, iid) == original
    assert done[("ttf-fork-2", "ttf_step:1")] == 0  # copied, not run
    await app.send_event(f"{iid}.go", "go")  # the fork kept the original's input (tag)
    assert await app.result("ttf-fork-2") == ["a", "b", "go"]


# a run in flight here, holding the write lock


hold = threading.Event()
"""Set by the test: ``ttf_ledger`` may commit."""
entered = threading.Event()
"""Set by ``ttf_ledger`` once its session holds the write lock and it waits for ``hold``."""


@rn.activity
def ttf_ledger(ctx: rn.ActivityContext, note: str) -> str:
    append_row(
        ctx.session, "ttf_ledger", "instance_id TEXT, step_id TEXT", (ctx.instance_id, ctx.step_id)
    )
    if ctx.attempt == 1 and not hold.is_set():
        entered.set()
        hold.wait(timeout=60)
    return note


@rn.workflow
async def ttf_ledger_flow(ctx: rn.WorkflowContext) -> list[str]:
    return [await ttf_step(ctx, "a"), await ttf_ledger(ctx, "l")]


async def test_rewinding_a_run_in_flight_here_commits_its_transactional_step_once(
    app: rn.App, table_rows: TableReader
) -> None:
    # The run is stopped while its transactional step holds the write lock in a worker
    # thread. The rewind's cut meets that lock for real and waits (the gate) until the
    # thread lets go; the stopped attempt's session must roll back, so the step's row is
    # written once, by the run the rewind launched.
    iid = "ttf-in-flight"
    hold.clear()
    entered.clear()
    await app.start(ttf_ledger_flow, instance_id=iid)
    await asyncio.to_thread(entered.wait, 60)
    rewind = asyncio.ensure_future(app.rewind(iid, to="ttf_step:1"))
    await eventually(lambda: iid not in app.running() or rewind.done())
    assert not rewind.done()  # stopped, and its cut waits for the lock the thread holds
    hold.set()
    change = await rewind
    assert (change.kept, change.archived) == (["ttf_step:1"], [])
    assert await app.result(iid) == ["a", "l"]
    assert table_rows("ttf_ledger") == [(iid, "ttf_ledger:1")]
    assert done[(iid, "ttf_step:1")] == 1
    assert [s.step_id for s in app.get_history(iid)] == ["ttf_step:1", "ttf_ledger:1"]


@pytest.mark.parametrize("operation", sorted(CUTS))
async def test_a_fault_after_the_cut_while_relaunching_leaves_no_lease_without_a_run(
    faulty: tuple[FaultyStore, rn.App], operation: str
) -> None:
    # The cut committed, then reading the instance back to relaunch it fails: the caller
    # is told, and the instance is leased to this worker with no run — which this worker's
    # recovery finds and resumes, as it does any lease it holds without a run.
    store, app = faulty
    iid = f"ttf-relaunch-{operation}"
    await _waiting(app, iid)
    fault = store.fail(
        "load_attempts", StoreError, when=lambda arguments: arguments["instance_id"] == iid
    )

    with pytest.raises(StoreError, match="injected fault"):
        await CUTS[operation](app, iid)

    assert fault.hits == 1
    await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
    runs = [(r.status, r.cut_after) for r in app.archived_runs(iid)]
    assert runs == [("rewound" if operation == "rewind" else "rolled_back", "ttf_step:1")]
    assert [s.step_id for s in app.get_history(iid)] == FORWARD
    assert undone[(iid, "compensate:ttf_step:2")] == (1 if operation == "rollback" else 0)
    assert done[(iid, "ttf_step:2")] == 2
    assert app.get_instance(iid).lock_owner is None


# this worker's recovery taking the lease a stopped run released


stalled = asyncio.Event()
"""Set by ``ttf_stalling`` once it runs; it then waits until its run is stopped."""


@rn.activity(transactional=False)
async def ttf_stalling(ctx: rn.ActivityContext, note: str) -> str:
    if ctx.attempt == 1 and not stalled.is_set():
        stalled.set()
        await asyncio.Event().wait()  # until the rewind stops this run
    return note


@rn.workflow
async def ttf_stalling_flow(ctx: rn.WorkflowContext) -> list[str]:
    return [await ttf_step(ctx, "a"), await ttf_stalling(ctx, "s")]


async def test_a_lease_recovery_here_takes_while_a_rewind_stops_the_run_is_the_rewinds(
    faulty: tuple[FaultyStore, rn.App],
) -> None:
    # Stopping the run releases its lease; this worker's recovery (which also takes leases
    # of this worker without a run) may claim it before the rewind does. That lease is this
    # worker's own: the rewind goes on with it, and the run it launches is the only one.
    store, app = faulty
    iid = "ttf-recovered"
    stalled.clear()
    await app.start(ttf_stalling_flow, instance_id=iid)
    await eventually(stalled.is_set, message="the stalling step runs")
    taken: list[bool] = []

    def recovery_claims_first(arguments: Arguments) -> bool:
        if arguments["instance_id"] == iid and arguments["previous"] is None and not taken:
            taken.append(store.inner.claim_instance(iid, app.worker_id, None))
        return False  # the real claim runs after it, and finds the lease taken

    store.fail("claim_instance", StoreError, when=recovery_claims_first)
    change = await app.rewind(iid, to="ttf_step:1")

    assert taken == [True]
    assert (change.kept, change.archived) == (["ttf_step:1"], [])
    assert await app.result(iid) == ["a", "s"]
    assert done[(iid, "ttf_step:1")] == 1
    assert [s.step_id for s in app.get_history(iid)] == ["ttf_step:1", "ttf_stalling:1"]
    assert app.get_instance(iid).lock_owner is None
