"""Replay from history: step ids, determinism, deterministic helpers, resuming."""

from __future__ import annotations

import asyncio

import pytest

import romancy_nb as rn
from romancy_nb.engine.registry import registry
from romancy_nb.testing import eventually

executed: list[str] = []
replaying_seen: list[bool] = []
gate: dict[str, asyncio.Event] = {}


@rn.activity
async def rp_count(ctx: rn.ActivityContext, n: int) -> int:
    executed.append(f"{ctx.step_id}")
    return n * 10


@rn.activity
async def rp_block(ctx: rn.ActivityContext) -> str:
    executed.append(ctx.step_id)
    await gate["open"].wait()
    return "opened"


@rn.activity
async def rp_sleepy(ctx: rn.ActivityContext, delay: float) -> float:
    await asyncio.sleep(delay)
    return delay


@rn.workflow
async def rp_flow(ctx: rn.WorkflowContext) -> list[object]:
    replaying_seen.append(ctx.is_replaying)
    a = await rp_count(ctx, 1)
    replaying_seen.append(ctx.is_replaying)
    b = await rp_block(ctx)
    c = await rp_count(ctx, 2)
    return [a, b, c]


@rn.workflow
async def rp_gather(ctx: rn.WorkflowContext) -> list[float]:
    return list(
        await asyncio.gather(rp_sleepy(ctx, 0.05), rp_sleepy(ctx, 0.0), rp_sleepy(ctx, 0.02))
    )


@rn.workflow
async def rp_explicit(ctx: rn.WorkflowContext) -> int:
    return await rp_count(ctx, 3, activity_id="charge-once")


@rn.workflow
async def rp_duplicate(ctx: rn.WorkflowContext) -> int:
    await rp_count(ctx, 1, activity_id="same")
    return await rp_count(ctx, 2, activity_id="same")


@rn.workflow
async def rp_helpers(ctx: rn.WorkflowContext) -> list[str]:
    values = [str(ctx.now()), str(ctx.uuid()), str(ctx.random())]
    await rp_block(ctx)
    return values


def _app(url: str) -> rn.App:
    return rn.App(url, default_retry=rn.RetryPolicy.none(), sweep_interval=0.05)


async def _interrupt_at_block(store_url: str, workflow: rn.Workflow) -> str:  # type: ignore[type-arg]
    """Run until rp_block starts, then close the app as a kernel restart would."""
    gate["open"] = asyncio.Event()
    app = _app(store_url)
    await app.open()
    iid = await app.start(workflow)
    await eventually(lambda: any(e.startswith("rp_block") for e in executed))
    await app.close()
    return iid


async def test_resume_replays_recorded_steps_without_running_them(store_url: str) -> None:
    executed.clear()
    replaying_seen.clear()
    iid = await _interrupt_at_block(store_url, rp_flow)
    assert executed == ["rp_count:1", "rp_block:1"]
    offline = rn.App(store_url)  # reads only: never opened, so it resumes nothing
    try:
        assert offline.get_instance(iid).status == "running"
    finally:
        await offline.close()  # its store's pool too

    gate["open"].set()
    async with _app(store_url) as app:  # resumes the orphan on open
        assert await app.result(iid) == [10, "opened", 20]
    # rp_count:1 ran once; rp_block ran again (it never completed), rp_count:2 ran once.
    assert executed == ["rp_count:1", "rp_block:1", "rp_block:1", "rp_count:2"]
    # First run: not replaying. Resume: replaying until the recorded step was consumed.
    assert replaying_seen == [False, False, True, False]


async def test_step_ids_follow_call_order_under_gather(app: rn.App) -> None:
    iid = await app.start(rp_gather)
    assert await app.result(iid) == [0.05, 0.0, 0.02]
    steps = {s.step_id: s for s in app.get_history(iid)}
    assert steps["rp_sleepy:1"].input == [0.05]
    assert steps["rp_sleepy:2"].input == [0.0]
    assert steps["rp_sleepy:3"].input == [0.02]
    # Recorded in the order they finished, named in the order they were called.
    by_seq = [s.step_id for s in sorted(steps.values(), key=lambda s: s.seq)]
    assert by_seq == ["rp_sleepy:2", "rp_sleepy:3", "rp_sleepy:1"]


async def test_explicit_activity_id(app: rn.App) -> None:
    iid = await app.start(rp_explicit)
    assert await app.result(iid) == 30
    assert [s.step_id for s in app.get_history(iid)] == ["charge-once"]


async def test_duplicate_step_id_is_an_error(app: rn.App) -> None:
    iid = await app.start(rp_duplicate)
    with pytest.raises(rn.RomancyError, match="used twice"):
        await app.result(iid)
    assert app.get_instance(iid).status == "failed"


async def test_deterministic_helpers_replay_the_same_values(store_url: str) -> None:
    executed.clear()
    iid = await _interrupt_at_block(store_url, rp_helpers)
    offline = rn.App(store_url)  # reads only: never opened, so it resumes nothing
    try:
        first = {s.step_id: s.output for s in offline.get_history(iid)}
    finally:
        await offline.close()  # its store's pool too
    assert set(first) == {"now:1", "uuid:1", "random:1"}
    gate["open"].set()
    async with _app(store_url) as app:
        values = await app.result(iid)
    now, uid, rnd = values
    assert uid == first["uuid:1"]
    assert float(rnd) == first["random:1"]
    assert now.replace(" ", "T").startswith(first["now:1"][:19])


async def test_changed_code_raises_determinism_violation_and_keeps_the_instance(
    store_url: str,
) -> None:
    executed.clear()
    iid = await _interrupt_at_block(store_url, rp_flow)

    @rn.workflow(name="rp_flow")
    async def rp_flow_edited(ctx: rn.WorkflowContext) -> list[object]:
        a = await rp_count(ctx, 99)  # was rp_count(ctx, 1)
        return [a]

    try:
        async with _app(store_url) as app:
            with pytest.raises(rn.DeterminismViolation) as caught:
                await app.result(iid)
            violation = caught.value
            assert violation.step_id == "rp_count:1"
            assert violation.expected["input"] == [1]
            assert violation.actual["input"] == [99]
            assert "-    1" in violation.diff and "+    99" in violation.diff
            # Not failed, not compensated: the instance waits for the code to be fixed.
            assert app.get_instance(iid).status == "running"
            assert executed == ["rp_count:1", "rp_block:1"]

            # Re-defining the original code resumes it at the next sweep.
            gate["open"].set()
            rn.workflow(name="rp_flow")(rp_flow.fn)
            assert await app.result(iid, timeout=30) == [10, "opened", 20]
    finally:
        registry.add_workflow(rp_flow)


async def test_replay_answers_every_step_from_history_and_writes_nothing(app: rn.App) -> None:
    executed.clear()
    iid = await app.start(rp_explicit)
    await app.result(iid)
    before = app.store.load_history(iid)
    report = await app.replay(iid)
    assert report.outcome == "completed" and report.result == 30
    assert report.replayed == report.recorded == 1 and report.steps == ["charge-once"]
    assert executed == ["charge-once"]  # the activity body ran once: in the first run
    assert app.store.load_history(iid) == before


async def test_replay_stops_at_the_frontier_and_reports_divergence(store_url: str) -> None:
    executed.clear()
    iid = await _interrupt_at_block(store_url, rp_flow)  # rp_count:1 recorded, rp_block not
    async with _app(store_url) as app:
        await app.cancel(iid)  # stop it resuming; its history stays
        report = await app.replay(iid)
    assert report.outcome == "frontier" and "rp_block:1" in (report.stopped_at or "")
    assert report.steps == ["rp_count:1"]

    @rn.workflow(name="rp_flow")
    async def rp_flow_changed(ctx: rn.WorkflowContext) -> list[object]:
        return [await rp_count(ctx, 7)]

    try:
        async with _app(store_url) as app:
            report = await app.replay(iid)
        assert report.outcome == "diverged"
        assert isinstance(report.error, rn.DeterminismViolation)
        assert report.error.step_id == "rp_count:1"
    finally:
        registry.add_workflow(rp_flow)
