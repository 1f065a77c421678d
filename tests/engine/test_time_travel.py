"""Time travel: the replay report, rewind, on_divergence="rewind", rollback, fork, retry.

Each test counts executions with a ledger (a list the activities append to), so "kept" and
"re-executed" are facts, not inferences from the history's shape.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

import romancy_nb as rn
from romancy_nb.store.protocol import StepRecord
from romancy_nb.testing import eventually
from tests.conftest import FAST_RETRY
from tests.faults import dump

ledger: list[str] = []
variant = {"suffix": "", "outage": False}


@rn.activity
async def tt_step(ctx: rn.ActivityContext, label: str) -> str:
    ledger.append(label)
    return label.upper()


@rn.activity
async def tt_reserve(ctx: rn.ActivityContext, item: str) -> str:
    ledger.append(f"reserve {item}")
    return f"r-{item}"


@tt_reserve.compensation
async def tt_release(ctx: rn.ActivityContext, item: str) -> None:
    ledger.append(f"release {item}")


@rn.activity
async def tt_flaky(ctx: rn.ActivityContext, label: str) -> str:
    ledger.append(label)
    if variant["outage"]:
        raise rn.TerminalError("the service is down")
    return label.upper()


@rn.workflow
async def tt_pipeline(ctx: rn.WorkflowContext, topic: str) -> list[str]:
    """Five steps; the third one's input depends on a global, as an edited cell would."""
    out = [await tt_step(ctx, f"{topic}-1"), await tt_step(ctx, f"{topic}-2")]
    out.append(await tt_step(ctx, f"{topic}-3{variant['suffix']}"))
    out.append(await tt_step(ctx, f"{topic}-4"))
    out.append(await tt_step(ctx, f"{topic}-5"))
    return out


@rn.workflow(on_divergence="rewind")
async def tt_waiting_pipeline(ctx: rn.WorkflowContext, topic: str) -> list[str]:
    out = [await tt_step(ctx, f"{topic}-1")]
    out.append(await tt_step(ctx, f"{topic}-2{variant['suffix']}"))
    out.append(await tt_step(ctx, f"{topic}-3"))
    event = await ctx.wait_event(f"go-{topic}")
    out.append(await tt_step(ctx, f"{topic}-4-{event.data}"))
    return out


@rn.workflow
async def tt_saga(ctx: rn.WorkflowContext, order: str) -> str:
    await tt_reserve(ctx, f"{order}-a")
    await tt_step(ctx, f"{order}-note")
    await tt_reserve(ctx, f"{order}-b")
    await tt_reserve(ctx, f"{order}-c")
    return await tt_flaky(ctx, f"{order}-ship")


@rn.workflow
async def tt_listener(ctx: rn.WorkflowContext, channel: str) -> Any:
    await ctx.subscribe(channel)
    await tt_step(ctx, f"{channel}-subscribed")
    message = await ctx.receive(channel)
    return message.data


@pytest.fixture(autouse=True)
def _fresh_ledger() -> None:
    ledger.clear()
    variant.update(suffix="", outage=False)


def forward(app: rn.App, iid: str) -> list[str]:
    return [s.step_id for s in app.get_history(iid) if s.kind != "compensation"]


# the replay report


async def test_the_report_pinpoints_an_edited_step_with_a_diff_and_lists_the_rows_after_it(
    app: rn.App,
) -> None:
    iid = await app.start(tt_pipeline, "ai")
    await app.result(iid)
    variant["suffix"] = "-edited"  # the cell that builds step 3's input was edited

    report = await app.replay(iid)

    assert report.outcome == "diverged" and report.diverged_at == "tt_step:3"
    assert [(row.step_id, row.status) for row in report.rows] == [
        ("tt_step:1", "matched"),
        ("tt_step:2", "matched"),
        ("tt_step:3", "diverged"),
        ("tt_step:4", "not reached"),
        ("tt_step:5", "not reached"),
    ]
    diverged = report.rows[2]
    assert diverged.recorded_input == ["ai-3"]
    assert diverged.asked_input == ["ai-3-edited"]
    assert diverged.recorded_output == "AI-3"
    assert '-    "ai-3"' in (diverged.diff or "")
    assert '+    "ai-3-edited"' in (diverged.diff or "")
    assert report.records()[0]["step_id"] == "tt_step:1"
    assert ledger.count("ai-3") == 1  # replay executed nothing


async def test_the_report_says_what_would_execute_and_what_would_wait(app: rn.App) -> None:
    iid = await app.start(tt_waiting_pipeline, "w")
    await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
    report = await app.replay(iid)
    assert report.outcome == "frontier"
    assert [row.status for row in report.rows] == ["matched"] * 3 + ["would wait"]
    assert report.rows[-1].kind == "wait_event" and report.rows[-1].recorded_input is None


# rewind


async def test_rewind_archives_later_steps_and_re_executes_them_with_the_current_code(
    app: rn.App,
) -> None:
    iid = await app.start(tt_pipeline, "rw")
    assert await app.result(iid) == ["RW-1", "RW-2", "RW-3", "RW-4", "RW-5"]
    variant["suffix"] = "-v2"

    change = await app.rewind(iid, to="tt_step:2")

    assert change.kept == ["tt_step:1", "tt_step:2"]
    assert change.archived == ["tt_step:3", "tt_step:4", "tt_step:5"]
    assert await app.result(iid) == ["RW-1", "RW-2", "RW-3-V2", "RW-4", "RW-5"]
    assert Counter(ledger) == Counter(
        {"rw-1": 1, "rw-2": 1, "rw-3": 1, "rw-3-v2": 1, "rw-4": 2, "rw-5": 2}
    )
    (archived,) = app.archived_runs(iid)
    assert (archived.status, archived.steps, archived.cut_after) == ("rewound", 3, "tt_step:2")
    old = app.get_archived_history(iid, archived.run_no)
    assert [s.input for s in old] == [["rw-3"], ["rw-4"], ["rw-5"]]
    assert forward(app, iid) == [f"tt_step:{n}" for n in range(1, 6)]


async def test_rewind_to_the_start_runs_everything_again(app: rn.App) -> None:
    iid = await app.start(tt_pipeline, "zero")
    await app.result(iid)
    change = await app.rewind(iid, to=None)
    assert change.kept == [] and len(change.archived) == 5
    await app.result(iid)
    assert ledger.count("zero-1") == 2


async def test_rewinding_a_reopened_instance_restores_its_subscriptions(app: rn.App) -> None:
    iid = await app.start(tt_listener, "news")
    await eventually(lambda: app.get_instance(iid).status == "waiting_for_message")
    await app.publish("news", "first")
    assert await app.result(iid) == "first"  # completing dropped the subscription

    await app.rewind(iid, to="tt_step:1")

    await eventually(lambda: app.get_instance(iid).status == "waiting_for_message")
    await app.publish("news", "second")
    assert await app.result(iid) == "second"
    assert ledger == ["news-subscribed"]  # the subscribe and the step were kept


# on_divergence="rewind"


async def test_on_divergence_rewind_reuses_every_matched_step(app: rn.App) -> None:
    iid = await app.start(tt_waiting_pipeline, "dv")
    await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
    variant["suffix"] = "-edited"  # step 2 changes while the instance waits

    await app.send_event("go-dv", "x")  # the wake-up replays with the edited code
    await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
    await app.send_event("go-dv", "y")

    assert await app.result(iid) == ["DV-1", "DV-2-EDITED", "DV-3", "DV-4-Y"]
    assert Counter(ledger) == Counter(
        {"dv-1": 1, "dv-2": 1, "dv-2-edited": 1, "dv-3": 2, "dv-4-y": 1}
    )
    (archived,) = app.archived_runs(iid)
    assert archived.status == "diverged" and archived.cut_after == "tt_step:1"
    cut = [s.step_id for s in app.get_archived_history(iid, archived.run_no)]
    assert cut == ["tt_step:2", "tt_step:3", "wait_event:1"]


async def test_the_app_policy_applies_to_every_workflow(store_url: str) -> None:
    async with rn.App(store_url, on_divergence="rewind", default_retry=FAST_RETRY) as app:
        iid = await app.start(tt_pipeline, "ap")
        await app.result(iid)
        variant["suffix"] = "-new"
        await app.rewind(iid, to="tt_step:4")  # replays 1-4: step 3 diverges, rewinds there
        assert await app.result(iid) == ["AP-1", "AP-2", "AP-3-NEW", "AP-4", "AP-5"]
        assert ledger.count("ap-1") == 1 and ledger.count("ap-4") == 2


def test_an_unknown_policy_is_refused_at_the_call() -> None:
    with pytest.raises(ValueError, match="'error' or 'rewind'"):
        rn.App(":memory:", on_divergence="ignore")
    with pytest.raises(ValueError, match="'error' or 'rewind'"):
        rn.workflow(on_divergence="sometimes")


# rollback


async def test_rollback_runs_exactly_the_later_compensations_in_reverse_order(
    app: rn.App,
) -> None:
    iid = await app.start(tt_saga, "o1")
    assert await app.result(iid) == "O1-SHIP"
    plan = await app.rollback_plan(iid, to="tt_step:1")
    assert [(u.step_id, u.compensation) for u in plan] == [
        ("tt_reserve:3", "tt_release"),
        ("tt_reserve:2", "tt_release"),
    ]
    ledger.clear()

    change = await app.rollback(iid, to="tt_step:1")

    assert change.compensated == ["tt_reserve:3", "tt_reserve:2"]
    assert ledger[:2] == ["release o1-c", "release o1-b"]
    assert await app.result(iid) == "O1-SHIP"
    assert ledger == ["release o1-c", "release o1-b", "reserve o1-b", "reserve o1-c", "o1-ship"]
    (archived,) = app.archived_runs(iid)
    assert archived.status == "rolled_back" and archived.cut_after == "tt_step:1"
    kinds = Counter(s.kind for s in app.get_archived_history(iid, archived.run_no))
    assert kinds == Counter({"activity": 3, "compensation": 2, "rollback": 1})
    assert not any(s.kind == "compensation" for s in app.get_history(iid))


async def test_rolling_back_a_failed_instance_reopens_it_and_redoes_what_was_undone(
    app: rn.App,
) -> None:
    variant["outage"] = True
    iid = await app.start(tt_saga, "o2")
    with pytest.raises(rn.TerminalError):
        await app.result(iid)
    assert ledger[-3:] == ["release o2-c", "release o2-b", "release o2-a"]
    variant["outage"] = False
    ledger.clear()

    await app.rollback(iid, to="tt_reserve:2")

    assert await app.result(iid) == "O2-SHIP"
    # nothing left to compensate; the undone reservations (a, b) are made again, c too
    assert ledger == ["reserve o2-a", "reserve o2-b", "reserve o2-c", "o2-ship"]


# retry


async def test_retry_resumes_from_the_failed_step_and_keeps_earlier_results(app: rn.App) -> None:
    @rn.workflow(name="tt_no_undo")
    async def no_undo(ctx: rn.WorkflowContext) -> str:
        await tt_step(ctx, "a")
        await tt_step(ctx, "b")
        return await tt_flaky(ctx, "c")

    variant["outage"] = True
    iid = await app.start(no_undo)
    with pytest.raises(rn.TerminalError):
        await app.result(iid)
    variant["outage"] = False

    change = await app.retry(iid)

    assert change.archived == ["tt_flaky:1"]
    assert await app.result(iid) == "C"
    assert ledger == ["a", "b", "c", "c"]
    assert app.get_instance(iid).error is None


async def test_retry_re_executes_the_steps_a_failure_compensated(app: rn.App) -> None:
    variant["outage"] = True
    iid = await app.start(tt_saga, "o3")
    with pytest.raises(rn.TerminalError):
        await app.result(iid)
    variant["outage"] = False
    ledger.clear()
    await app.retry(iid)
    assert await app.result(iid) == "O3-SHIP"
    assert ledger == ["reserve o3-a", "reserve o3-b", "reserve o3-c", "o3-ship"]  # note kept


async def test_retry_refuses_an_instance_that_did_not_fail(app: rn.App) -> None:
    iid = await app.start(tt_pipeline, "ok")
    await app.result(iid)
    with pytest.raises(rn.InvalidWorkflowState, match="only a failed instance"):
        await app.retry(iid)


# fork


async def test_fork_copies_history_up_to_a_step_and_leaves_the_original_identical(
    app: rn.App,
) -> None:
    iid = await app.start(tt_pipeline, "fk")
    await app.result(iid)
    before = dump(app.store, iid)

    fork = await app.fork(iid, at="tt_step:3", instance_id="fk-fork")

    assert fork == "fk-fork"
    assert await app.result(fork) == ["FK-1", "FK-2", "FK-3", "FK-4", "FK-5"]
    assert Counter(ledger) == Counter({"fk-1": 1, "fk-2": 1, "fk-3": 1, "fk-4": 2, "fk-5": 2})
    assert dump(app.store, iid) == before
    info = app.get_instance(fork)
    assert (info.forked_from, info.forked_at) == (iid, "tt_step:3")


async def test_fork_with_a_new_input_re_executes_what_depended_on_it(store_url: str) -> None:
    async with rn.App(store_url, on_divergence="rewind", default_retry=FAST_RETRY) as app:
        iid = await app.start(tt_pipeline, "in")
        await app.result(iid)
        fork = await app.fork(iid, at="tt_step:2", input={"topic": "out"})
        assert await app.result(fork) == ["OUT-1", "OUT-2", "OUT-3", "OUT-4", "OUT-5"]
        assert app.get_instance(fork).input == {"topic": "out"}
        assert app.get_instance(iid).input == {"topic": "in"}


async def test_fork_refuses_an_input_that_does_not_fit_and_writes_nothing(app: rn.App) -> None:
    iid = await app.start(tt_pipeline, "bad")
    await app.result(iid)
    count = len(app.list_instances().instances)
    with pytest.raises(rn.RomancyError):
        await app.fork(iid, input={"nope": 1})
    assert len(app.list_instances().instances) == count


# refusals


async def test_an_unknown_step_is_refused_with_the_steps_there_are(app: rn.App) -> None:
    iid = await app.start(tt_pipeline, "u")
    await app.result(iid)
    with pytest.raises(rn.StepNotFound, match="tt_step:1, tt_step:2"):
        await app.rewind(iid, to="tt_step:9")
    with pytest.raises(rn.WorkflowNotFound):
        await app.rewind("no-such-instance", to=None)


async def test_rewinding_into_a_compensation_is_refused(app: rn.App) -> None:
    variant["outage"] = True
    iid = await app.start(tt_saga, "o4")
    with pytest.raises(rn.TerminalError):
        await app.result(iid)
    history: list[StepRecord] = app.store.load_history(iid)
    compensation = next(s.step_id for s in history if s.kind == "compensation")
    with pytest.raises(rn.InvalidWorkflowState, match="unwinding"):
        await app.rewind(iid, to=compensation)
    assert app.get_instance(iid).status == "failed"
    assert app.get_instance(iid).lock_owner is None  # the refused call let the lease go


# compare


async def test_compare_pairs_steps_and_highlights_what_differs(app: rn.App) -> None:
    iid = await app.start(tt_pipeline, "cmp")
    await app.result(iid)
    variant["suffix"] = "-b"
    async with rn.App(app.url, on_divergence="rewind") as other:
        fork = await other.fork(iid, at="tt_step:2")
        await other.result(fork)

    comparison = app.compare(iid, fork)

    assert [pair.step_id for pair in comparison.steps] == [f"tt_step:{n}" for n in range(1, 6)]
    assert [pair.differences for pair in comparison.steps][:3] == [[], [], ["input", "output"]]
    assert comparison.first_difference == "tt_step:3"
    row = comparison.records()[2]
    assert (row["a_input"], row["b_input"]) == (["cmp-3"], ["cmp-3-b"])
    assert row["differs"] == "input, output"


def test_pairing_slots_steps_only_one_run_has_after_their_predecessor() -> None:
    from romancy_nb.engine.compare import pair_steps

    def step(seq: int, step_id: str) -> StepRecord:
        return StepRecord("x", seq, step_id, "activity", step_id, "completed", "[]", "1", None,
                          1, 0.0, 0.0)  # fmt: skip

    a = [step(1, "s:1"), step(2, "s:2")]
    b = [step(1, "s:1"), step(2, "t:1"), step(3, "s:2"), step(4, "u:1")]
    pairs = pair_steps(a, b)
    assert [p.step_id for p in pairs] == ["s:1", "t:1", "s:2", "u:1"]
    assert [p.differences for p in pairs] == [[], ["only b"], [], ["only b"]]


# the states an instance can be rewound from


async def test_rewinding_an_instance_running_here_stops_its_run_first(app: rn.App) -> None:
    import asyncio

    gate = asyncio.Event()

    @rn.activity(name="tt_long")
    async def long_step(ctx: rn.ActivityContext, label: str) -> str:
        ledger.append(label)
        await gate.wait()
        return label

    @rn.workflow(name="tt_long_flow")
    async def long_flow(ctx: rn.WorkflowContext) -> str:
        await tt_step(ctx, "one")
        await tt_step(ctx, "two")
        return await long_step(ctx, "long")

    iid = await app.start(long_flow)
    await eventually(lambda: "long" in ledger)
    change = await app.rewind(iid, to="tt_step:1")  # while long_step is in flight here
    assert change.archived == ["tt_step:2"]
    await eventually(lambda: ledger.count("long") == 2)  # the new run reached it again
    gate.set()
    assert await app.result(iid) == "long"
    assert ledger == ["one", "two", "long", "two", "long"]


@rn.workflow
async def tt_strict_pipeline(ctx: rn.WorkflowContext, topic: str) -> list[str]:
    out = [await tt_step(ctx, f"{topic}-1"), await tt_step(ctx, f"{topic}-2{variant['suffix']}")]
    await ctx.wait_event(f"go-{topic}")
    return out


async def test_a_diverged_instance_is_rewound_past_its_divergence(app: rn.App) -> None:
    iid = await app.start(tt_strict_pipeline, "sx")
    await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
    variant["suffix"] = "-edited"
    await app.send_event("go-sx")
    with pytest.raises(rn.DeterminismViolation):
        await app.result(iid)
    report = await app.replay(iid)
    assert report.diverged_at == "tt_step:2"

    await app.rewind(iid, to="tt_step:1")  # "rewind from the diverging step", as the panel offers

    await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
    await app.send_event("go-sx")
    assert await app.result(iid) == ["SX-1", "SX-2-EDITED"]
    assert ledger == ["sx-1", "sx-2", "sx-2-edited"]
