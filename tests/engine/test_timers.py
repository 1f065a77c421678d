"""Durable timers: ctx.sleep / ctx.sleep_until suspend the instance and resume it."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

import romancy_nb as rn
from romancy_nb.testing import eventually
from tests.conftest import count_rows

CALLS: list[str] = []


@rn.activity
async def tm_step(ctx: rn.ActivityContext, label: str) -> str:
    CALLS.append(label)
    return label


@rn.activity
async def tm_reserve(ctx: rn.ActivityContext, item: str) -> str:
    CALLS.append(f"reserve {item}")
    return item


@tm_reserve.compensation
async def tm_release(ctx: rn.ActivityContext, item: str) -> None:
    CALLS.append(f"release {item}")


@rn.workflow
async def tm_sleeper(ctx: rn.WorkflowContext, seconds: float) -> float:
    await tm_step(ctx, "before")
    await ctx.sleep(seconds)
    await tm_step(ctx, "after")
    return time.time()


@rn.workflow
async def tm_until(ctx: rn.WorkflowContext, at: datetime) -> str:
    await ctx.sleep_until(at, timer_id="wake-up")
    return "woke"


@rn.workflow
async def tm_naive(ctx: rn.WorkflowContext) -> str:
    try:
        await ctx.sleep_until(datetime(2030, 1, 1))
    except ValueError as error:
        return str(error)
    return "accepted"


@rn.workflow
async def tm_gather(ctx: rn.WorkflowContext) -> list[str]:
    await asyncio.gather(ctx.sleep(0.05), ctx.sleep(0.1))
    return ["done"]


@rn.workflow
async def tm_zero(ctx: rn.WorkflowContext) -> str:
    await ctx.sleep(0)
    await ctx.sleep_until(datetime.now(UTC) - timedelta(seconds=5))
    return "no wait"


@rn.workflow
async def tm_saga(ctx: rn.WorkflowContext, item: str) -> str:
    await tm_reserve(ctx, item)
    await ctx.sleep(3600)
    return "never"


def _status(app: rn.App, iid: str) -> str:
    return app.get_instance(iid).status


async def test_sleep_suspends_without_a_coroutine_then_resumes(app: rn.App) -> None:
    CALLS.clear()
    started = time.time()
    iid = await app.start(tm_sleeper, 0.3)
    # no task, no coroutine (not inline, the store commits the suspension from a thread:
    # the task ends just after the status shows)
    await eventually(
        lambda: _status(app, iid) == "waiting_for_timer" and iid not in app.running(),
        message="waiting without a task",
    )
    info = app.get_instance(iid)
    assert info.lock_owner is None  # the lease is released while waiting
    ended = await app.result(iid, timeout=10)
    assert ended - started >= 0.3
    assert CALLS == ["before", "after"]  # "before" ran once: replay answered it
    steps = [(s.step_id, s.status) for s in app.get_history(iid)]
    assert steps == [
        ("tm_step:1", "completed"),
        ("sleep:1", "completed"),
        ("tm_step:2", "completed"),
    ]
    fired = app.get_history(iid)[1].output
    assert fired["fired_at"] >= fired["fire_at"]


async def test_sleep_until_an_aware_datetime_with_a_timer_id(app: rn.App) -> None:
    at = datetime.now(UTC) + timedelta(seconds=0.2)
    iid = await app.start(tm_until, at)
    assert await app.result(iid, timeout=10) == "woke"
    assert [s.step_id for s in app.get_history(iid)] == ["wake-up"]
    assert app.get_history(iid)[0].finished_at >= at


async def test_a_naive_datetime_is_rejected_clearly(app: rn.App) -> None:
    message = await app.result(await app.start(tm_naive), timeout=10)
    assert "timezone-aware" in message and "naive" in message


async def test_sleeps_in_gather_both_end(app: rn.App) -> None:
    iid = await app.start(tm_gather)
    assert await app.result(iid, timeout=10) == ["done"]
    assert sorted(s.step_id for s in app.get_history(iid)) == ["sleep:1", "sleep:2"]


async def test_a_sleep_that_is_already_over_does_not_suspend(app: rn.App) -> None:
    iid = await app.start(tm_zero)
    assert await app.result(iid, timeout=10) == "no wait"
    assert [s.step_id for s in app.get_history(iid)] == ["sleep:1", "sleep:2"]


async def test_a_timer_that_expired_while_no_worker_ran_fires_at_the_next_start(
    store_url: str,
) -> None:
    CALLS.clear()
    async with rn.App(store_url) as first:
        iid = await first.start(tm_sleeper, 0.2)
        await eventually(lambda: _status(first, iid) == "waiting_for_timer")
    fire_at = time.time() + 0.2
    await eventually(lambda: time.time() > fire_at, message="the timer's due time")
    async with rn.App(store_url) as second:
        assert await second.result(iid, timeout=10) > fire_at
    assert CALLS == ["before", "after"]


async def test_another_worker_fires_the_timer_from_its_sweep(store_url: str) -> None:
    # The second app has no change watcher and learnt of no timer at start: only its
    # background sweep can find the timer the first app left behind.
    async with rn.App(store_url, watch_interval=None, sweep_interval=0.05) as sweeper:
        async with rn.App(store_url) as first:
            iid = await first.start(tm_sleeper, 0.1)
            await eventually(lambda: _status(first, iid) == "waiting_for_timer")
        assert await sweeper.result(iid, timeout=10) > 0


async def test_cancel_while_sleeping_runs_compensations(app: rn.App) -> None:
    CALLS.clear()
    iid = await app.start(tm_saga, "room")
    await eventually(lambda: _status(app, iid) == "waiting_for_timer")
    assert await app.cancel(iid, "guest left") == "cancelled"
    assert CALLS == ["reserve room", "release room"]
    assert count_rows(app.store, "waits") == 0  # the timer is gone with the instance
    with pytest.raises(rn.WorkflowCancelled):
        await app.result(iid)


async def test_bad_sleep_arguments_fail_the_call(app: rn.App) -> None:
    @rn.workflow(name="tm_bad_args")
    async def bad(ctx: rn.WorkflowContext) -> list[str]:
        errors = []
        for call in (lambda: ctx.sleep("1"), lambda: ctx.sleep(float("nan"))):  # type: ignore[arg-type]
            try:
                call()
            except (TypeError, ValueError) as error:
                errors.append(type(error).__name__)
        return errors

    assert await app.result(await app.start(bad), timeout=10) == ["TypeError", "ValueError"]


async def test_fire_timer_ends_a_sleep_now(app: rn.App) -> None:
    CALLS.clear()
    iid = await app.start(tm_sleeper, 3600)
    await eventually(lambda: app.get_instance(iid).status == "waiting_for_timer")
    assert await app.fire_timer(iid, "not-a-timer") is False
    assert await app.fire_timer(iid) is True
    await app.result(iid, timeout=30)
    assert CALLS == ["before", "after"]
    assert await app.fire_timer(iid) is False  # nothing pending any more
