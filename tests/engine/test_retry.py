"""Retry policies, terminal errors, timeouts and durable attempt counts."""

from __future__ import annotations

import asyncio
import time

import pytest

import romancy_nb as rn
from romancy_nb.testing import eventually

attempts_seen: dict[str, list[int]] = {}


def _note(ctx: rn.ActivityContext) -> None:
    attempts_seen.setdefault(ctx.instance_id, []).append(ctx.attempt)


@rn.activity
async def rt_flaky(ctx: rn.ActivityContext, fail_times: int) -> str:
    _note(ctx)
    if ctx.attempt <= fail_times:
        raise ConnectionError(f"boom {ctx.attempt}")
    return f"ok after {ctx.attempt}"


@rn.activity
def rt_terminal(ctx: rn.ActivityContext) -> None:
    _note(ctx)
    raise rn.TerminalError("card declined")


@rn.activity(retry=rn.RetryPolicy.fixed(2, 0.001), timeout=0.05)
async def rt_slow(ctx: rn.ActivityContext) -> str:
    _note(ctx)
    await asyncio.sleep(5)
    return "never"


@rn.activity(retry=rn.RetryPolicy.fixed(2, 0.001), timeout=0.05)
def rt_slow_sync(ctx: rn.ActivityContext) -> str:
    _note(ctx)
    time.sleep(0.3)
    return "late"


@rn.activity(retry=rn.RetryPolicy.fixed(4, 0.001))
async def rt_own_policy(ctx: rn.ActivityContext) -> None:
    _note(ctx)
    raise ValueError("always")


@rn.activity(
    retry=rn.RetryPolicy(
        max_attempts=3,
        initial_interval=0.001,
        multiplier=1.0,
        max_interval=0.001,
        non_retryable=(KeyError,),
    )
)
async def rt_non_retryable(ctx: rn.ActivityContext) -> None:
    _note(ctx)
    raise KeyError("missing")


@rn.workflow
async def rt_flow(ctx: rn.WorkflowContext, fail_times: int) -> str:
    return await rt_flaky(ctx, fail_times)


@rn.workflow
async def rt_catching(ctx: rn.WorkflowContext) -> str:
    try:
        await rt_terminal(ctx)
    except rn.TerminalError as error:
        return f"caught {error}"
    return "no error"


@rn.workflow
async def rt_single(ctx: rn.WorkflowContext, which: str) -> object:
    return await {
        "slow": rt_slow,
        "slow_sync": rt_slow_sync,
        "own": rt_own_policy,
        "nonretry": rt_non_retryable,
        "terminal": rt_terminal,
    }[which](ctx)


def test_policy_presets_and_delays() -> None:
    default = rn.RetryPolicy.default()
    assert default.max_attempts == 5
    assert [default.delay(n) for n in range(1, 5)] == [1, 2, 4, 8]
    assert rn.RetryPolicy(max_interval=3).delay(10) == 3
    assert rn.RetryPolicy.none().max_attempts == 1
    fixed = rn.RetryPolicy.fixed(3, 0.5)
    assert [fixed.delay(n) for n in (1, 2, 3)] == [0.5, 0.5, 0.5]
    exp = rn.RetryPolicy.exponential(6, 0.1, 0.3)
    assert [exp.delay(n) for n in (1, 2, 3)] == [0.1, 0.2, 0.3]
    with pytest.raises(ValueError):
        rn.RetryPolicy(max_attempts=0)


async def test_retries_until_success_and_records_attempts(app: rn.App) -> None:
    iid = await app.start(rt_flow, 2)
    assert await app.result(iid) == "ok after 3"
    assert attempts_seen[iid] == [1, 2, 3]
    step = app.get_history(iid)[0]
    assert step.attempts == 3 and step.status == "completed"


async def test_exhausted_retries_carry_every_attempt(app: rn.App) -> None:
    iid = await app.start(rt_flow, 10)  # the app default here: 3 quick attempts
    with pytest.raises(rn.RetryExhaustedError) as caught:
        await app.result(iid)
    error = caught.value
    assert [a.attempt for a in error.attempts] == [1, 2, 3]
    assert [a.message for a in error.attempts] == ["boom 1", "boom 2", "boom 3"]
    assert error.attempts[0].error_type == "builtins.ConnectionError"
    assert app.get_instance(iid).status == "failed"


async def test_terminal_error_is_never_retried(app: rn.App) -> None:
    iid = await app.start(rt_catching)
    assert await app.result(iid) == "caught card declined"
    assert attempts_seen[iid] == [1]


async def test_failed_step_replays_the_same_error_type(app: rn.App) -> None:
    iid = await app.start(rt_single, "terminal")
    with pytest.raises(rn.TerminalError, match="card declined"):
        await app.result(iid)
    step = app.get_history(iid)[0]
    assert step.status == "failed" and step.error["type"] == "romancy_nb.errors.TerminalError"


async def test_activity_policy_wins_over_app_default(app: rn.App) -> None:
    iid = await app.start(rt_single, "own")
    with pytest.raises(rn.RetryExhaustedError):
        await app.result(iid)
    assert attempts_seen[iid] == [1, 2, 3, 4]


async def test_non_retryable_types(app: rn.App) -> None:
    iid = await app.start(rt_single, "nonretry")
    with pytest.raises(rn.RetryExhaustedError) as caught:
        await app.result(iid)
    assert attempts_seen[iid] == [1]
    assert isinstance(caught.value.__cause__, KeyError) or caught.value.attempts[0].error_type == (
        "builtins.KeyError"
    )


@pytest.mark.parametrize("which", ["slow", "slow_sync"])
async def test_timeouts_raise_activity_timeout_and_are_retried(app: rn.App, which: str) -> None:
    iid = await app.start(rt_single, which)
    with pytest.raises(rn.RetryExhaustedError) as caught:
        await app.result(iid)
    assert attempts_seen[iid] == [1, 2]
    assert {a.error_type for a in caught.value.attempts} == {
        "romancy_nb.errors.ActivityTimeoutError"
    }


async def test_attempt_count_survives_a_restart(store_url: str) -> None:
    """Attempt 1 fails, the process stops during the backoff, the next start runs attempt 2."""
    app = rn.App(store_url, default_retry=rn.RetryPolicy.fixed(5, 60))  # a minute's backoff
    await app.open()
    iid = await app.start(rt_flow, 3)
    await eventually(lambda: len(app.store.load_attempts(iid)) == 1)
    await app.close()
    async with rn.App(store_url, default_retry=rn.RetryPolicy.fixed(5, 0.001)) as app:
        assert await app.result(iid) == "ok after 4"
        attempts = app.store.load_attempts(iid)
    assert attempts_seen[iid] == [1, 2, 3, 4]
    assert [a.attempt for a in attempts] == [1, 2, 3]
