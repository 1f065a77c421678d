"""ctx.recur: same instance id, history archived as a 'recurred' run, bounded everything."""

from __future__ import annotations

import gc

import pytest

import romancy_nb as rn
from romancy_nb.testing import eventually
from tests.conftest import count_rows

SAMPLES: dict[int, int] = {}


@rn.activity
async def rc_tick(ctx: rn.ActivityContext, i: int) -> int:
    return i


@rn.workflow
async def rc_counter(ctx: rn.WorkflowContext, i: int, limit: int) -> int:
    await rc_tick(ctx, i)
    if i in (2000, limit - 1) and not ctx.is_replaying:
        gc.collect()
        SAMPLES[i] = len(gc.get_objects())
    if i + 1 < limit:
        ctx.recur(i + 1, limit)
    return i + 1


@rn.workflow
async def rc_subscriber(ctx: rn.WorkflowContext, round: int) -> str:
    if round == 0:
        await ctx.subscribe("rc.news")
        await ctx.join_group("rc.team")
        await ctx.sleep(0)
        await ctx.recur(round + 1)  # awaiting it works too
    await ctx.wait_event("rc.go")
    return "second run"


@rn.workflow
async def rc_bad(ctx: rn.WorkflowContext, n: int) -> str:
    try:
        ctx.recur("not a number")  # type: ignore[arg-type]
    except rn.InvalidArgumentsError:
        return "rejected"
    return "recurred"


async def test_recur_keeps_the_id_and_archives_the_run(app: rn.App) -> None:
    iid = await app.start(rc_counter, 0, 3, instance_id="counter-1")
    assert await app.result(iid, timeout=10) == 3
    info = app.get_instance(iid)
    assert info.status == "completed" and info.input == {"i": 2, "limit": 3}
    assert [s.step_id for s in app.get_history(iid)] == ["rc_tick:1"]  # this run's only
    runs = app.store.archived_runs(iid)
    assert [(r.run_no, r.status, r.steps) for r in runs] == [(1, "recurred", 1), (2, "recurred", 1)]
    assert [r.input for r in runs] == ['{"i":0,"limit":3}', '{"i":1,"limit":3}']
    archived = app.store.load_archived_history(iid, 1)
    assert [(s.step_id, s.output) for s in archived] == [("rc_tick:1", "0")]


async def test_ten_thousand_recurs_in_bounded_memory_and_history(app: rn.App) -> None:
    SAMPLES.clear()
    iid = await app.start(rc_counter, 0, 10_000)
    assert await app.result(iid, timeout=120) == 10_000
    # the live history is one iteration's; nothing accumulates in memory
    assert len(app.get_history(iid)) == 1
    assert app.running() == []
    growth = SAMPLES[9_999] - SAMPLES[2000]
    assert growth < 2000, f"{growth} Python objects more after 8,000 further iterations"
    assert len(app.store.archived_runs(iid)) == 9_999


async def test_recur_drops_subscriptions_and_groups(app: rn.App) -> None:
    iid = await app.start(rc_subscriber, 0)
    await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
    mode = app.store.get_subscription_mode
    assert mode(iid, "rc.news") is None  # dropped by recur
    assert mode(iid, "rc.go") == "broadcast"  # the new run's own
    assert app.get_group_members("rc.team") == []
    await app.send_event("rc.go", None)
    assert await app.result(iid, timeout=10) == "second run"


async def test_recur_with_bad_input_raises_in_the_workflow(app: rn.App) -> None:
    assert await app.result(await app.start(rc_bad, 1), timeout=10) == "rejected"


async def test_archive_retention(store_url: str) -> None:
    async with rn.App(store_url, archive_retention=0.0) as app:
        iid = await app.start(rc_counter, 0, 3)
        assert await app.result(iid, timeout=10) == 3
        assert len(app.store.archived_runs(iid)) == 2
        await app.sweep()
        assert app.store.archived_runs(iid) == []
        assert count_rows(app.store, "workflow_history_archive") == 0


@pytest.mark.parametrize("n", [1])
async def test_recur_survives_a_restart(store_url: str, n: int) -> None:
    async with rn.App(store_url) as first:
        iid = await first.start(rc_subscriber, 0)
        await eventually(lambda: first.get_instance(iid).status == "waiting_for_event")
    async with rn.App(store_url) as second:
        await second.send_event("rc.go", n)
        assert await second.result(iid, timeout=10) == "second run"
        assert len(second.store.archived_runs(iid)) == 1
