"""Saga compensation on failure and on cancel, durably."""

from __future__ import annotations

import asyncio

import pytest

import romancy_nb as rn
from romancy_nb.testing import eventually

ledger: list[str] = []
gates: dict[str, asyncio.Event] = {}


@rn.activity
async def sg_reserve(ctx: rn.ActivityContext, item: str) -> str:
    ledger.append(f"reserve {item}")
    return f"r-{item}"


@sg_reserve.compensation
async def sg_release(ctx: rn.ActivityContext, item: str) -> None:
    ledger.append(f"release {item}")
    if item in gates:
        await gates[item].wait()


@rn.activity
async def sg_charge(ctx: rn.ActivityContext, amount: int) -> str:
    ledger.append(f"charge {amount}")
    return "receipt"


@sg_charge.compensation
def sg_refund(ctx: rn.ActivityContext, amount: int) -> None:
    ledger.append(f"refund {amount}")


@rn.activity
async def sg_ship(ctx: rn.ActivityContext, fail: bool) -> str:
    if fail:
        raise rn.TerminalError("no courier")
    return "shipped"


@rn.activity
async def sg_hold(ctx: rn.ActivityContext) -> None:
    await gates["hold"].wait()


@rn.workflow
async def sg_order(ctx: rn.WorkflowContext, fail: bool, hold: bool = False) -> str:
    await sg_reserve(ctx, "a")
    await sg_charge(ctx, 10)
    await sg_reserve(ctx, "b")
    if hold:
        await sg_hold(ctx)
    return await sg_ship(ctx, fail)


async def test_success_runs_no_compensation(app: rn.App) -> None:
    ledger.clear()
    assert await app.result(await app.start(sg_order, False)) == "shipped"
    assert ledger == ["reserve a", "charge 10", "reserve b"]


async def test_failure_compensates_in_reverse_order_and_keeps_the_error(app: rn.App) -> None:
    ledger.clear()
    iid = await app.start(sg_order, True)
    with pytest.raises(rn.TerminalError, match="no courier"):
        await app.result(iid)
    assert ledger[3:] == ["release b", "refund 10", "release a"]
    info = app.get_instance(iid)
    assert info.status == "failed"
    assert info.error["type"] == "romancy_nb.errors.TerminalError"
    compensations = [s.step_id for s in app.get_history(iid) if s.kind == "compensation"]
    assert compensations == [
        "compensate:sg_reserve:2",
        "compensate:sg_charge:1",
        "compensate:sg_reserve:1",
    ]


async def test_cancel_a_running_instance_runs_compensations(app: rn.App) -> None:
    ledger.clear()
    gates.clear()
    gates["hold"] = asyncio.Event()
    iid = await app.start(sg_order, False, True)
    await eventually(lambda: len(ledger) == 3)
    assert await app.cancel(iid, "customer changed their mind") == "cancelled"
    assert ledger[3:] == ["release b", "refund 10", "release a"]
    with pytest.raises(rn.WorkflowCancelled) as caught:
        await app.result(iid)
    assert caught.value.reason == "customer changed their mind"
    with pytest.raises(rn.InvalidWorkflowState):
        await app.cancel(iid)
    with pytest.raises(rn.WorkflowNotFound):
        await app.cancel("no-such-instance")


async def test_compensation_resumes_after_a_crash_without_repeating(store_url: str) -> None:
    ledger.clear()
    gates.clear()
    gates["a"] = asyncio.Event()  # the last compensation blocks: "crash" while it runs
    app = rn.App(store_url, default_retry=rn.RetryPolicy.none())
    await app.open()
    iid = await app.start(sg_order, True)
    await eventually(lambda: "release a" in ledger)
    await app.close()
    offline = rn.App(store_url)  # reads only: never opened, so it resumes nothing
    try:
        assert offline.get_instance(iid).status == "compensating"
    finally:
        await offline.close()  # its store's pool too
    done_before = ledger.copy()
    gates["a"].set()
    async with rn.App(store_url, default_retry=rn.RetryPolicy.none()) as app:
        with pytest.raises(rn.TerminalError, match="no courier"):
            await app.result(iid)
    # Only the interrupted compensation ran again; the others ran exactly once.
    assert ledger[len(done_before) :] == ["release a"]
    assert ledger.count("release b") == 1 and ledger.count("refund 10") == 1


async def test_cancel_an_instance_no_process_is_running(store_url: str) -> None:
    ledger.clear()
    gates.clear()
    gates["hold"] = asyncio.Event()
    app = rn.App(store_url)
    await app.open()
    iid = await app.start(sg_order, False, True)
    await eventually(lambda: len(ledger) == 3)
    await app.close()  # the instance is left 'running' with no holder
    # A new app resumes it on open; cancel it there before it can finish.
    async with rn.App(store_url) as app:
        assert await app.cancel(iid, "stop") == "cancelled"
    assert ledger[-3:] == ["release b", "refund 10", "release a"]
