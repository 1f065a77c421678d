"""Events: ctx.wait_event, app.send_event, timeouts, the early-event rule, replay."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

import romancy_nb as rn
from romancy_nb.testing import eventually
from tests.conftest import Backend, count_rows

CALLS: list[str] = []


class Payment(BaseModel):
    order: str
    amount: float


@rn.activity
async def ev_step(ctx: rn.ActivityContext, label: str) -> str:
    CALLS.append(label)
    return label


@rn.activity
async def ev_hold(ctx: rn.ActivityContext, item: str) -> str:
    CALLS.append(f"hold {item}")
    return item


@ev_hold.compensation
async def ev_unhold(ctx: rn.ActivityContext, item: str) -> None:
    CALLS.append(f"unhold {item}")


@rn.workflow
async def ev_waiter(ctx: rn.WorkflowContext, event_type: str) -> dict:
    await ev_step(ctx, "before")
    ev = await ctx.wait_event(event_type)
    await ev_step(ctx, "after")
    return {
        "type": ev.type,
        "source": ev.source,
        "id": ev.id,
        "time": ev.time.isoformat() if ev.time else None,
        "data": ev.data,
        "extensions": ev.extensions,
    }


@rn.workflow
async def ev_typed(ctx: rn.WorkflowContext) -> Payment:
    ev = await ctx.wait_event("ev.payment", model=Payment)
    assert isinstance(ev.data, Payment)
    return ev.data


@rn.workflow
async def ev_timeout_caught(ctx: rn.WorkflowContext, timeout: float) -> str:
    try:
        await ctx.wait_event("ev.never", timeout=timeout)
    except rn.EventTimeoutError as error:
        return f"timed out: {error.event_type}"
    return "got it"


@rn.workflow
async def ev_timeout_uncaught(ctx: rn.WorkflowContext) -> str:
    await ev_hold(ctx, "seat")
    await ctx.wait_event("ev.never.either", timeout=0.1)
    return "got it"


@rn.workflow
async def ev_subscribed_early(ctx: rn.WorkflowContext) -> list:
    await ctx.subscribe("ev.early")  # listening from here on
    await ctx.sleep(0.2)  # busy elsewhere while the events arrive
    first = await ctx.wait_event("ev.early", timeout=5)
    second = await ctx.wait_event("ev.early", timeout=5)
    return [first.data, second.data]


@rn.workflow
async def ev_late_subscriber(ctx: rn.WorkflowContext) -> str:
    try:
        ev = await ctx.wait_event("ev.before-anyone", timeout=0.2)
    except rn.EventTimeoutError:
        return "not delivered"
    return f"delivered {ev.data}"


@rn.workflow
async def ev_cancellable(ctx: rn.WorkflowContext) -> str:
    await ev_hold(ctx, "table")
    await ctx.wait_event("ev.never.again")
    return "never"


@rn.workflow
async def ev_two_waits(ctx: rn.WorkflowContext) -> list:
    a = await ctx.wait_event("ev.first")
    await ev_step(ctx, "between")
    b = await ctx.wait_event("ev.second")
    return [a.data, b.data]


def _status(app: rn.App, iid: str) -> str:
    return app.get_instance(iid).status


async def test_wait_event_returns_the_event_with_its_attributes(app: rn.App) -> None:
    CALLS.clear()
    iid = await app.start(ev_waiter, "ev.approved")
    # A store that is not inline (PostgreSQL) commits the suspension from a thread: the
    # run's task ends just after the status shows, so both are awaited together.
    await eventually(lambda: _status(app, iid) == "waiting_for_event" and iid not in app.running())
    assert app.get_instance(iid).lock_owner is None
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    event_id = await app.send_event(
        "ev.approved",
        {"by": "ann"},
        source="tests",
        id="evt-1",
        time=when,
        extensions={"tenant": "t1"},
    )
    assert event_id == "evt-1"
    result = await app.result(iid, timeout=10)
    assert result == {
        "type": "ev.approved",
        "source": "tests",
        "id": "evt-1",
        "time": when.isoformat(),
        "data": {"by": "ann"},
        "extensions": {"tenant": "t1"},
    }
    assert CALLS == ["before", "after"]
    assert [s.step_id for s in app.get_history(iid)] == ["ev_step:1", "wait_event:1", "ev_step:2"]


async def test_event_data_decoded_to_a_model(app: rn.App) -> None:
    iid = await app.start(ev_typed)
    await eventually(lambda: _status(app, iid) == "waiting_for_event")
    await app.send_event("ev.payment", {"order": "o-1", "amount": 9.5})
    assert await app.result(iid, timeout=10) == Payment(order="o-1", amount=9.5)


async def test_event_timeout_really_fires(app: rn.App) -> None:
    iid = await app.start(ev_timeout_caught, 0.2)
    assert await app.result(iid, timeout=10) == "timed out: ev.never"
    step = app.get_history(iid)[0]
    assert (step.step_id, step.status) == ("wait_event:1", "timed_out")


async def test_an_uncaught_timeout_fails_the_workflow_and_compensates(app: rn.App) -> None:
    CALLS.clear()
    iid = await app.start(ev_timeout_uncaught)
    with pytest.raises(rn.EventTimeoutError, match="ev.never.either"):
        await app.result(iid, timeout=10)
    assert _status(app, iid) == "failed"
    assert CALLS == ["hold seat", "unhold seat"]


async def test_timeout_zero_polls(app: rn.App) -> None:
    iid = await app.start(ev_timeout_caught, 0)
    assert await app.result(iid, timeout=10) == "timed out: ev.never"


async def test_an_event_sent_while_subscribed_but_busy_is_kept(app: rn.App) -> None:
    iid = await app.start(ev_subscribed_early)
    await eventually(lambda: _status(app, iid) == "waiting_for_timer")
    await app.send_event("ev.early", 1)
    await app.send_event("ev.early", 2)
    assert await app.result(iid, timeout=10) == [1, 2]


async def test_an_event_sent_before_the_subscription_is_not_delivered(app: rn.App) -> None:
    await app.send_event("ev.before-anyone", "too early")
    iid = await app.start(ev_late_subscriber)
    assert await app.result(iid, timeout=10) == "not delivered"


async def test_every_subscribed_instance_gets_the_event_once(app: rn.App) -> None:
    ids = [await app.start(ev_waiter, "ev.fanout") for _ in range(3)]
    for iid in ids:
        await eventually(lambda iid=iid: _status(app, iid) == "waiting_for_event")
    await app.send_event("ev.fanout", "go", id="fan-1")
    await app.send_event("ev.fanout", "go again", id="fan-1")  # a redelivery: ignored
    results = [await app.result(iid, timeout=10) for iid in ids]
    assert [r["data"] for r in results] == ["go", "go", "go"]
    assert count_rows(app.store, "channel_messages") == 1


async def test_replay_returns_the_recorded_event_without_waiting(store_url: str) -> None:
    CALLS.clear()
    async with rn.App(store_url) as first:
        iid = await first.start(ev_two_waits)
        await eventually(lambda: _status(first, iid) == "waiting_for_event")
        await first.send_event("ev.first", "A")
        await eventually(lambda: len(first.get_history(iid)) == 2)  # ev.first + between
        await eventually(lambda: _status(first, iid) == "waiting_for_event")
    async with rn.App(store_url) as second:
        await second.send_event("ev.second", "B")
        assert await second.result(iid, timeout=10) == ["A", "B"]
    assert CALLS == ["between"]


async def test_cancel_while_waiting_for_an_event_runs_compensations(app: rn.App) -> None:
    CALLS.clear()
    iid = await app.start(ev_cancellable)
    await eventually(lambda: _status(app, iid) == "waiting_for_event")
    assert await app.cancel(iid, "no answer") == "cancelled"
    assert CALLS == ["hold table", "unhold table"]
    assert count_rows(app.store, "waits") == 0
    assert count_rows(app.store, "channel_subscriptions") == 0
    # a late event finds nobody waiting and changes nothing
    await app.send_event("ev.never.again", "late")
    assert _status(app, iid) == "cancelled"


async def test_bad_events_store_nothing(app: rn.App) -> None:
    with pytest.raises(rn.SerializationError, match="ev.bad"):
        await app.send_event("ev.bad", {"x": object()})
    with pytest.raises(ValueError, match="timezone-aware"):
        await app.send_event("ev.bad", 1, time=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="event type"):
        await app.send_event("", 1)
    assert count_rows(app.store, "channel_messages") == 0


async def test_send_event_before_the_app_is_opened(store_url: str) -> None:
    app = rn.App(store_url)
    await app.send_event("ev.offline", 1)  # stored; no waker runs yet, nothing opened
    assert not app.is_open
    assert app.store.last_message_id() == 1
    await app.close()


async def test_a_cancel_recorded_by_a_process_without_the_workflow(
    app: rn.App, store_url: str, backend: Backend
) -> None:
    """The CLI (say) records the cancel; a worker with the definitions carries it out."""
    CALLS.clear()
    iid = await app.start(ev_cancellable)
    await eventually(lambda: _status(app, iid) == "waiting_for_event")
    async with rn.App(store_url, registry=rn.Registry()) as outsider:
        if backend.name == "sqlite":
            with pytest.raises(rn.WorkflowNotFound):
                await outsider.cancel(iid, "from the command line")
        else:
            # NOTIFY tells the worker with the definitions at once: it may take the instance
            # before the outsider tries to (then cancel returns) or after (it raises)
            with contextlib.suppress(rn.WorkflowNotFound):
                await outsider.cancel(iid, "from the command line")
    assert app.get_instance(iid).cancel_reason == "from the command line"
    if backend.name == "sqlite":  # its watcher reports no cancels: the sweep carries it out
        await app.send_event("ev.never.again", "late")  # does not wake an instance to cancel
        assert _status(app, iid) == "waiting_for_event"
        await app.sweep()
    with pytest.raises(rn.WorkflowCancelled, match="from the command line"):
        await app.result(iid, timeout=10)
    assert CALLS == ["hold table", "unhold table"]


def test_waiting_names_are_exported() -> None:
    for name in ("ReceivedEvent", "ChannelMessage", "ChannelNotSubscribedError"):
        assert name in rn.__all__ and hasattr(rn, name)
    assert issubclass(rn.ChannelNotSubscribedError, rn.RomancyError)


@rn.workflow
async def ev_every_wait(ctx: rn.WorkflowContext) -> list:
    await ctx.subscribe("ch.replayed")
    await ctx.sleep(0.01)
    ev = await ctx.wait_event("ev.replayed")
    msg = await ctx.receive("ch.replayed", timeout=5)
    return [ev.data, msg.data]


async def test_every_wait_replays_its_recorded_outcome_at_once(app: rn.App) -> None:
    iid = await app.start(ev_every_wait)
    await eventually(lambda: _status(app, iid) == "waiting_for_event")
    report = await app.replay(iid)  # a waiting instance: replay stops at its wait
    assert report.outcome == "frontier" and "waiting_for_event" in (report.stopped_at or "")
    await app.publish("ch.replayed", "m")  # kept for the subscriber
    await app.send_event("ev.replayed", "e")
    assert await app.result(iid, timeout=10) == ["e", "m"]
    report = await app.replay(iid)  # every wait answered from history, nothing waits
    assert report.outcome == "completed" and report.result == ["e", "m"]
    assert report.replayed == report.recorded == 4
