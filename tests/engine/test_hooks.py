"""App(hooks=...): every event in order, trace headers kept across runs, raising hooks,
structured log records. On both backends."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import romancy_nb as rn
from romancy_nb.engine.hooks import HookSet
from romancy_nb.engine.registry import registry
from romancy_nb.testing import eventually
from tests.conftest import FAST_RETRY

FLAKY: dict[str, int] = {}


@rn.activity
async def hk_step(ctx: rn.ActivityContext, label: str) -> str:
    return label


@rn.activity
async def hk_flaky(ctx: rn.ActivityContext, key: str) -> int:
    FLAKY[key] = FLAKY.get(key, 0) + 1
    if FLAKY[key] < 2:
        raise ConnectionError("first attempt fails")
    return FLAKY[key]


@rn.activity
async def hk_hold(ctx: rn.ActivityContext, item: str) -> str:
    return item


@hk_hold.compensation
async def hk_unhold(ctx: rn.ActivityContext, item: str) -> None:
    return None


@rn.activity
async def hk_broken(ctx: rn.ActivityContext) -> None:
    raise ValueError("always broken")


@rn.workflow
async def hk_flow(ctx: rn.WorkflowContext, key: str) -> str:
    await hk_step(ctx, "one")
    await hk_flaky(ctx, key)
    await ctx.sleep(0.05)
    return await hk_step(ctx, "two")


@rn.workflow
async def hk_failing(ctx: rn.WorkflowContext) -> None:
    await hk_hold(ctx, "seat")
    await hk_broken(ctx)


@rn.workflow
async def hk_waiting(ctx: rn.WorkflowContext, event_type: str) -> Any:
    event = await ctx.wait_event(event_type)
    return event.data


@rn.workflow
async def hk_diverging(ctx: rn.WorkflowContext) -> str:
    await hk_step(ctx, "first")
    await ctx.wait_event("hk.div")
    return "done"


class Recorder(rn.Hooks):
    """Every event as a tuple, and the trace headers each run was given."""

    def __init__(self, traceparent: str | None = None) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.traces: list[dict[str, str]] = []
        self._traceparent = traceparent

    def workflow_started(self, run: rn.RunInfo) -> None:
        self.events.append(("started", run.workflow))
        if self._traceparent is not None:
            run.trace["traceparent"] = self._traceparent

    def workflow_resumed(self, run: rn.RunInfo) -> None:
        self.events.append(("resumed", run.workflow))
        self.traces.append(dict(run.trace))

    def workflow_suspended(self, run: rn.RunInfo, status: str) -> None:
        self.events.append(("suspended", status))

    def workflow_completed(self, run: rn.RunInfo, result: Any) -> None:
        self.events.append(("completed", result))

    def workflow_failed(self, run: rn.RunInfo, error: BaseException) -> None:
        self.events.append(("failed", type(error).__name__))

    def workflow_cancelled(self, run: rn.RunInfo, error: rn.WorkflowCancelled) -> None:
        self.events.append(("cancelled", error.reason))

    def workflow_stopped(self, run: rn.RunInfo, status: str, error: BaseException | None) -> None:
        self.events.append(("stopped", status))

    def activity_started(self, call: rn.ActivityCall) -> None:
        self.events.append(("activity started", call.activity, call.attempt))

    def activity_completed(self, call: rn.ActivityCall) -> None:
        self.events.append(("activity completed", call.activity, call.attempt))

    def activity_retried(self, call: rn.ActivityCall, error: BaseException, delay: float) -> None:
        self.events.append(("activity retried", call.activity, call.attempt, str(error)))

    def activity_failed(self, call: rn.ActivityCall, error: BaseException) -> None:
        self.events.append(("activity failed", call.activity, call.kind, type(error).__name__))

    def replay_diverged(self, run: rn.RunInfo, violation: rn.DeterminismViolation) -> None:
        self.events.append(("diverged", run.workflow))


class Raising(rn.Hooks):
    def workflow_started(self, run: rn.RunInfo) -> None:
        raise RuntimeError("hook broken")

    def activity_started(self, call: rn.ActivityCall) -> None:
        raise RuntimeError("hook broken")

    def workflow_completed(self, run: rn.RunInfo, result: Any) -> None:
        raise RuntimeError("hook broken")


async def test_every_event_in_order(store_url: str) -> None:
    recorder = Recorder()
    async with rn.App(store_url, default_retry=FAST_RETRY, hooks=recorder) as app:
        iid = await app.start(hk_flow, f"order {store_url}")
        assert await app.result(iid, timeout=30) == "two"
    assert recorder.events == [
        ("started", "hk_flow"),
        ("activity started", "hk_step", 1),
        ("activity completed", "hk_step", 1),
        ("activity started", "hk_flaky", 1),
        ("activity retried", "hk_flaky", 1, "first attempt fails"),
        ("activity started", "hk_flaky", 2),
        ("activity completed", "hk_flaky", 2),
        ("suspended", "waiting_for_timer"),
        ("resumed", "hk_flow"),
        ("activity started", "hk_step", 1),
        ("activity completed", "hk_step", 1),
        ("completed", "two"),
    ]


async def test_failure_compensation_and_failed_status(store_url: str) -> None:
    recorder = Recorder()
    async with rn.App(store_url, default_retry=FAST_RETRY, hooks=[recorder]) as app:
        iid = await app.start(hk_failing)
        with pytest.raises(rn.RetryExhaustedError):
            await app.result(iid, timeout=30)
        assert app.get_instance(iid).status == "failed"
    assert recorder.events[-4:] == [
        ("activity failed", "hk_broken", "activity", "RetryExhaustedError"),
        ("activity started", "hk_hold.compensation", 1),
        ("activity completed", "hk_hold.compensation", 1),
        ("failed", "RetryExhaustedError"),
    ]
    retried = [e for e in recorder.events if e[0] == "activity retried"]
    assert [e[2] for e in retried] == [1, 2]


async def test_cancelled_while_waiting(store_url: str) -> None:
    recorder = Recorder()
    async with rn.App(store_url, hooks=recorder) as app:
        iid = await app.start(hk_waiting, "hk.never")
        await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
        assert await app.cancel(iid, "not needed") == "cancelled"
    assert recorder.events == [
        ("started", "hk_waiting"),
        ("suspended", "waiting_for_event"),
        ("resumed", "hk_waiting"),
        ("cancelled", "not needed"),
    ]


async def test_trace_headers_follow_the_instance_to_another_app(store_url: str) -> None:
    first = Recorder(traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    async with rn.App(store_url, hooks=first) as app:
        iid = await app.start(hk_waiting, "hk.go")
        await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
    second = Recorder()
    async with rn.App(store_url, hooks=second) as app:
        await app.send_event("hk.go", {"n": 1})
        assert await app.result(iid, timeout=30) == {"n": 1}
    assert first.events == [("started", "hk_waiting"), ("suspended", "waiting_for_event")]
    assert second.events == [("resumed", "hk_waiting"), ("completed", {"n": 1})]
    assert second.traces == [
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    ]


async def test_a_raising_hook_is_logged_and_never_breaks_the_run(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    with caplog.at_level(logging.ERROR, logger="romancy_nb"):
        async with rn.App(store_url, default_retry=FAST_RETRY, hooks=[Raising(), recorder]) as app:
            iid = await app.start(hk_flow, f"raising {store_url}")
            assert await app.result(iid, timeout=30) == "two"
    assert recorder.events[0] == ("started", "hk_flow")  # the hooks after it still hear
    assert recorder.events[-1] == ("completed", "two")
    broken = [r for r in caplog.records if "hook" in r.getMessage()]
    assert broken, "a raising hook is logged"
    assert {r.instance_id for r in broken} == {iid}  # type: ignore[attr-defined]
    assert {r.workflow for r in broken} == {"hk_flow"}  # type: ignore[attr-defined]
    assert any(r.step_id is not None for r in broken)  # type: ignore[attr-defined]


async def test_log_records_carry_instance_workflow_and_step(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="romancy_nb"):
        async with rn.App(store_url, default_retry=FAST_RETRY) as app:
            iid = await app.start(hk_flow, f"logged {store_url}")
            await app.result(iid, timeout=30)
    retrying = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retrying) == 1
    record = retrying[0]
    assert (record.instance_id, record.workflow) == (iid, "hk_flow")  # type: ignore[attr-defined]
    assert record.step_id.startswith("hk_flaky")  # type: ignore[attr-defined]


async def test_a_divergence_is_reported_and_stops_the_run(store_url: str) -> None:
    recorder = Recorder()
    try:
        async with rn.App(store_url, hooks=recorder) as app:
            iid = await app.start(hk_diverging)
            await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")

            @rn.workflow(name="hk_diverging")
            async def hk_diverging_edited(ctx: rn.WorkflowContext) -> str:
                await hk_step(ctx, "edited")
                return "edited"

            await app.send_event("hk.div")
            with pytest.raises(rn.DeterminismViolation):
                await app.result(iid, timeout=30)
    finally:
        # Only once the app is closed: restored while it runs, the original code matches
        # the history again and this app's recovery would resume and finish the instance.
        registry.add_workflow(hk_diverging)
    assert recorder.events[-3:] == [
        ("resumed", "hk_diverging"),
        ("diverged", "hk_diverging"),
        ("stopped", "diverged"),
    ]


def test_no_hooks_cost_nothing_and_bad_hooks_are_refused() -> None:
    assert {"Hooks", "RunInfo", "ActivityCall"} <= set(rn.__all__)
    assert HookSet.of(None) is None
    assert HookSet.of([]) is None
    assert HookSet.of(rn.Hooks()) is None  # nothing overridden: nothing to call
    assert HookSet.of(Recorder()) is not None
    with pytest.raises(TypeError, match="rn.Hooks"):
        HookSet.of([object()])  # type: ignore[list-item]
