"""Channels: broadcast, competing (exactly once), direct, conflicts, timeouts, retention."""

from __future__ import annotations

import asyncio
import time

import pytest

import romancy_nb as rn
from romancy_nb.testing import eventually
from tests.conftest import count_rows

CALLS: list[str] = []


@rn.activity
async def ch_lock(ctx: rn.ActivityContext, name: str) -> str:
    CALLS.append(f"lock {name}")
    return name


@ch_lock.compensation
async def ch_unlock(ctx: rn.ActivityContext, name: str) -> None:
    CALLS.append(f"unlock {name}")


@rn.workflow
async def ch_listener(ctx: rn.WorkflowContext, channel: str, count: int) -> list:
    await ctx.subscribe(channel, mode="broadcast")
    got = []
    for _ in range(count):
        msg = await ctx.receive(channel)
        got.append(
            {
                "data": msg.data,
                "channel": msg.channel,
                "metadata": msg.metadata,
                "sender": msg.sender_instance_id,
                "id": msg.id,
                "has_time": msg.created_at is not None,
            }
        )
    return got


@rn.workflow
async def ch_publisher(ctx: rn.WorkflowContext, channel: str, items: list[int]) -> list[str]:
    ids = []
    for item in items:
        ids.append(await ctx.publish(channel, item, metadata={"n": item}))
    return ids


@rn.workflow
async def ch_worker(ctx: rn.WorkflowContext, channel: str) -> list[int]:
    await ctx.subscribe(channel, mode="competing")
    got: list[int] = []
    while True:
        msg = await ctx.receive(channel)
        if msg.data == "stop":
            return got
        got.append(msg.data)


@rn.workflow
async def ch_mailbox(ctx: rn.WorkflowContext) -> list:
    await ctx.sleep(0.05)  # the direct messages arrive before the subscription
    await ctx.subscribe("ch.inbox", mode="direct")
    a = await ctx.receive("ch.inbox")
    b = await ctx.receive("ch.inbox")
    return [a.data, b.data, a.sender_instance_id]


@rn.workflow
async def ch_sender(ctx: rn.WorkflowContext, target: str) -> str:
    await ctx.send_to(target, "ch.inbox", "from a workflow")
    return "sent"


@rn.workflow
async def ch_mode(ctx: rn.WorkflowContext, channel: str, mode: str) -> str:
    try:
        await ctx.subscribe(channel, mode=mode)
    except rn.ChannelModeConflictError as error:
        return f"conflict {error.existing_mode}->{error.requested_mode}"
    await ctx.receive(channel)
    return "received"


@rn.workflow
async def ch_unsubscribed(ctx: rn.WorkflowContext) -> list[str]:
    errors = []
    try:
        await ctx.receive("ch.nobody")
    except rn.ChannelNotSubscribedError as error:
        errors.append(type(error).__name__)
    await ctx.subscribe("ch.brief")
    await ctx.unsubscribe("ch.brief")
    try:
        await ctx.receive("ch.brief")
    except rn.ChannelNotSubscribedError as error:
        errors.append(type(error).__name__)
    return errors


@rn.workflow
async def ch_timeout(ctx: rn.WorkflowContext) -> str:
    await ctx.subscribe("ch.silent", mode="competing")
    try:
        await ctx.receive("ch.silent", timeout=0.2)
    except rn.ChannelMessageTimeoutError:
        return "timed out"
    return "received"


@rn.workflow
async def ch_cancellable(ctx: rn.WorkflowContext) -> str:
    await ch_lock(ctx, "door")
    await ctx.subscribe("ch.quiet")
    await ctx.receive("ch.quiet")
    return "never"


@rn.workflow
async def ch_publish_then_wait(ctx: rn.WorkflowContext) -> str:
    await ctx.publish("ch.once", "hello")
    await ctx.wait_event("ch.go")
    return "done"


def _status(app: rn.App, iid: str) -> str:
    return app.get_instance(iid).status


async def _all_waiting(app: rn.App, ids: list[str], status: str) -> None:
    for iid in ids:
        await eventually(lambda iid=iid: _status(app, iid) == status, message=f"{iid} {status}")


async def test_broadcast_every_subscriber_gets_every_message(app: rn.App) -> None:
    ids = [await app.start(ch_listener, "ch.news", 2) for _ in range(3)]
    await _all_waiting(app, ids, "waiting_for_message")
    sender = await app.start(ch_publisher, "ch.news", [1, 2])
    message_ids = await app.result(sender, timeout=10)
    for iid in ids:
        got = await app.result(iid, timeout=10)
        assert [g["data"] for g in got] == [1, 2]
        assert [g["id"] for g in got] == message_ids
        assert got[0]["channel"] == "ch.news" and got[0]["metadata"] == {"n": 1}
        assert got[0]["sender"] == sender and got[0]["has_time"]


async def test_competing_each_message_consumed_exactly_once(app: rn.App) -> None:
    """10 consumers × 1,000 messages: every message is taken by exactly one consumer."""
    workers = [await app.start(ch_worker, "ch.jobs") for _ in range(10)]
    await _all_waiting(app, workers, "waiting_for_message")
    for n in range(1000):
        await app.publish("ch.jobs", n)
        if n % 7 == 0:
            await asyncio.sleep(0)  # let consumers take, suspend and wake in between
    for _ in workers:  # FIFO: the stops come after every job
        await app.publish("ch.jobs", "stop")
    results = [await app.result(iid, timeout=60) for iid in workers]
    taken = [n for result in results for n in result]
    assert len(taken) == 1000
    assert sorted(taken) == list(range(1000))
    assert sum(1 for r in results if r) > 1  # the work was shared
    assert count_rows(app.store, "channel_messages") == 0  # all consumed


async def test_competing_messages_published_before_any_consumer_wait(app: rn.App) -> None:
    for n in range(3):
        await app.publish("ch.backlog", n)
    await app.publish("ch.backlog", "stop")
    iid = await app.start(ch_worker, "ch.backlog")
    assert await app.result(iid, timeout=10) == [0, 1, 2]


async def test_direct_messages_wait_for_their_instance(app: rn.App) -> None:
    target = await app.start(ch_mailbox, instance_id="mailbox-1")
    await app.send_to(target, "ch.inbox", "from outside")
    sender = await app.start(ch_sender, target)
    assert await app.result(sender, timeout=10) == "sent"
    assert await app.result(target, timeout=10) == ["from outside", "from a workflow", None]


async def test_a_channel_keeps_one_mode(app: rn.App) -> None:
    first = await app.start(ch_mode, "ch.modal", "broadcast")
    await eventually(lambda: _status(app, first) == "waiting_for_message")
    second = await app.start(ch_mode, "ch.modal", "competing")
    assert await app.result(second, timeout=10) == "conflict broadcast->competing"
    step = app.get_history(second)[0]
    assert (step.step_id, step.status) == ("subscribe:1", "failed")  # replay raises it again


async def test_receive_without_a_subscription_is_an_error(app: rn.App) -> None:
    iid = await app.start(ch_unsubscribed)
    errors = await app.result(iid, timeout=10)
    assert errors == ["ChannelNotSubscribedError", "ChannelNotSubscribedError"]


async def test_receive_timeout_raises(app: rn.App) -> None:
    assert await app.result(await app.start(ch_timeout), timeout=10) == "timed out"


async def test_cancel_while_waiting_for_a_message_runs_compensations(app: rn.App) -> None:
    CALLS.clear()
    iid = await app.start(ch_cancellable)
    await eventually(lambda: _status(app, iid) == "waiting_for_message")
    assert await app.cancel(iid) == "cancelled"
    assert CALLS == ["lock door", "unlock door"]
    assert count_rows(app.store, "waits") == 0
    assert count_rows(app.store, "channel_subscriptions") == 0


async def test_a_replayed_publish_is_not_published_again(store_url: str) -> None:
    async with rn.App(store_url) as first:
        iid = await first.start(ch_publish_then_wait)
        await eventually(lambda: _status(first, iid) == "waiting_for_event")
    async with rn.App(store_url) as second:
        await second.send_event("ch.go", None)
        assert await second.result(iid, timeout=10) == "done"
        assert count_rows(second.store, "channel_messages", channel="ch.once") == 1


async def test_retention_drops_old_messages(store_url: str) -> None:
    async with rn.App(store_url, message_retention=0.05) as app:
        await app.publish("ch.old", 1)
        assert count_rows(app.store, "channel_messages") == 1
        created = time.time()
        await eventually(lambda: time.time() > created + 0.05)
        await app.sweep()
        assert count_rows(app.store, "channel_messages") == 0


async def test_bad_channel_arguments(app: rn.App) -> None:
    with pytest.raises(rn.SerializationError):
        await app.publish("ch.bad", object())
    with pytest.raises(ValueError):
        await app.publish("", 1)

    @rn.workflow(name="ch_bad_mode")
    async def bad_mode(ctx: rn.WorkflowContext) -> str:
        try:
            ctx.subscribe("ch.x", mode="fanout")
        except ValueError as error:
            return str(error)
        return "accepted"

    assert "broadcast, competing, direct" in await app.result(await app.start(bad_mode))
