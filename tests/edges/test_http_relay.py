"""The outbox over real HTTP: ``HttpEventSender`` posting to a CloudEvents receiver.

The receiver (tests/edges/event_receiver.py) is a Starlette app served by uvicorn on a
loopback port of this process; it parses every request with the CloudEvents SDK and
answers as the test tells it (503 with ``Retry-After``, 400, 401, or not listening). The
app that writes and relays the events runs here too, on the test's database (every
backend). The same relayer with an in-process sender: tests/engine/test_outbox.py; under
SIGKILL: tests/crash/test_outbox_crash.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

import romancy_nb as rn
from romancy_nb.http.relay import HttpEventSender
from romancy_nb.store import open_store
from romancy_nb.store.protocol import OutboxRecord
from romancy_nb.testing import eventually
from tests.edges.event_receiver import Arrival, EventReceiver

PATIENT = rn.RetryPolicy.fixed(2000, 0.02)
"""The relayer's retries here: every 20 ms, for far longer than any test keeps it down."""
WHEN = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


@rn.activity(name="http_relay_order", transactional=False)
async def order(ctx: rn.ActivityContext, n: int) -> list[str]:
    """Two events of one step: one with every attribute given, one with the defaults."""
    placed = ctx.send_event(
        "order.placed",
        {"n": n, "items": ["a", "b"], "note": "café", "paid": None},
        id=f"placed-{ctx.instance_id}",
        time=WHEN,
        subject=f"order-{n}",
        extensions={"tenant": "acme", "priority": 3, "urgent": True},
    )
    return [placed, ctx.send_event("order.confirmed", {"n": n})]


@rn.workflow(name="http_relay_ordering")
async def ordering(ctx: rn.WorkflowContext, n: int) -> list[str]:
    return await order(ctx, n)


@rn.activity(name="http_relay_numbered", transactional=False)
async def numbered(ctx: rn.ActivityContext, first: int, count: int) -> None:
    for n in range(first, first + count):
        ctx.send_event("relay.numbered", {"instance": ctx.instance_id, "n": n})


@rn.workflow(name="http_relay_counting")
async def counting(ctx: rn.WorkflowContext, steps: int, per_step: int) -> int:
    """``steps`` steps that send ``per_step`` numbered events each (n = 0, 1, 2, ...)."""
    for step in range(steps):
        await numbered(ctx, step * per_step, per_step)
    return steps * per_step


@pytest.fixture
def receiver() -> Iterator[EventReceiver]:
    """A receiver that is not listening yet: a test starts it (or not)."""
    receiver = EventReceiver()
    try:
        yield receiver
    finally:
        receiver.stop()
    assert receiver.invalid == []  # every request was a valid CloudEvent


def _relaying(store_url: str, **settings: Any) -> rn.App:
    return rn.App(store_url, outbox_interval=0.02, outbox_retry=PATIENT, **settings)


async def _settled(app: rn.App, count: int) -> list[OutboxRecord]:
    """The outbox, oldest first, once it holds ``count`` events and none is pending."""

    def done() -> bool:
        return len(app.list_outbox()) == count and not app.list_outbox(status="pending")

    await eventually(done, message=f"{count} events settled")
    return sorted(app.list_outbox(), key=lambda e: e.seq)


def _numbers(arrivals: list[Arrival], instance_id: str) -> list[int]:
    return [a.data["n"] for a in arrivals if a.data["instance"] == instance_id]


@pytest.mark.parametrize("mode", ["structured", "binary"])
async def test_events_arrive_as_valid_cloud_events_in_either_mode(
    store_url: str, receiver: EventReceiver, mode: str
) -> None:
    receiver.start()
    settings: dict[str, Any] = (
        {"broker_url": receiver.url}  # the default sender: structured mode
        if mode == "structured"
        else {"event_sender": HttpEventSender(receiver.url, mode="binary")}
    )
    async with _relaying(store_url, **settings) as app:
        await app.start(ordering, 7, instance_id="o-7")
        placed_id, confirmed_id = await app.result("o-7")
        outbox = await _settled(app, 2)

    assert [(e.status, e.attempts) for e in outbox] == [("delivered", 1)] * 2
    placed, confirmed = receiver.all()
    assert (placed.status, confirmed.status) == (202, 202)
    assert (placed.mode, confirmed.mode) == (mode, mode)
    content_type = "application/cloudevents+json" if mode == "structured" else "application/json"
    assert placed.content_type.startswith(content_type)
    assert (placed.id, placed.type, placed.source) == (
        "placed-o-7",
        "order.placed",
        "romancy_nb/http_relay_ordering",
    )
    assert placed_id == "placed-o-7"
    assert (placed.subject, placed.time) == ("order-7", WHEN)
    assert placed.data == {"n": 7, "items": ["a", "b"], "note": "café", "paid": None}
    if mode == "structured":  # JSON keeps the extensions' types
        assert placed.extensions == {"tenant": "acme", "priority": 3, "urgent": True}
    else:  # ce-* headers: the canonical strings (CloudEvents' type system), true not True
        assert placed.extensions == {"tenant": "acme", "priority": "3", "urgent": "true"}
    assert (confirmed.id, confirmed.type, confirmed.source) == (
        confirmed_id,
        "order.confirmed",
        "romancy_nb/http_relay_ordering",
    )
    assert (confirmed.subject, confirmed.extensions, confirmed.data) == (None, {}, {"n": 7})
    assert confirmed.time is not None and confirmed.time.tzinfo is not None
    assert [e.event_id for e in outbox] == [placed.id, confirmed.id]


async def test_a_receiver_that_is_down_gets_every_event_once_it_listens_in_order(
    store_url: str, receiver: EventReceiver
) -> None:
    instances = [f"c-{i}" for i in range(3)]
    async with _relaying(store_url, broker_url=receiver.url) as app:
        for iid in instances:
            await app.start(counting, 3, 2, instance_id=iid)
        for iid in instances:
            assert await app.result(iid) == 6

        def refused_a_while() -> bool:  # each instance's first event tried and retried
            heads = [min(app.list_outbox(instance_id=i), key=lambda e: e.seq) for i in instances]
            return all(h.attempts >= 3 and "ConnectError" in (h.last_error or "") for h in heads)

        await eventually(refused_a_while, message="deliveries refused while down")
        assert receiver.all() == []
        receiver.start()
        outbox = await _settled(app, 18)

    assert all(e.status == "delivered" for e in outbox)
    arrivals = receiver.all()
    assert all(a.status == 202 for a in arrivals)
    assert sorted(a.id for a in arrivals) == sorted(e.event_id for e in outbox)  # each once
    for iid in instances:
        assert _numbers(arrivals, iid) == list(range(6))
        # from the outbox read while open: list_outbox() after close() reopens the store
        head, *rest = [e for e in outbox if e.instance_id == iid]
        assert head.attempts >= 4  # refused at least three times, then delivered
        assert "ConnectError" in (head.last_error or "")
        assert [e.attempts for e in rest] == [1] * 5  # waited behind it, untried


async def test_503_is_retried_honouring_retry_after_then_delivered(
    store_url: str, receiver: EventReceiver
) -> None:
    receiver.start()
    receiver.unavailable("1", None)  # 503 twice: wait a second, then as the policy says
    async with _relaying(store_url, broker_url=receiver.url) as app:
        await app.start(ordering, 1, instance_id="o-1")
        placed_id, confirmed_id = await app.result("o-1")
        placed, confirmed = await _settled(app, 2)

    arrivals = receiver.all()
    assert [(a.id, a.status) for a in arrivals] == [
        (placed_id, 503),
        (placed_id, 503),
        (placed_id, 202),
        (confirmed_id, 202),
    ]
    assert arrivals[1].at - arrivals[0].at >= 1.0  # Retry-After: 1, not the policy's 20 ms
    assert (placed.status, placed.attempts) == ("delivered", 3)
    assert placed.last_error == f"HTTP 503 from {receiver.url}: busy"
    assert (confirmed.status, confirmed.attempts, confirmed.last_error) == ("delivered", 1, None)


async def test_a_400_fails_the_event_with_the_reason_and_the_instance_goes_on(
    store_url: str, receiver: EventReceiver
) -> None:
    receiver.start()
    receiver.refused.add("order.placed")
    async with _relaying(store_url, broker_url=receiver.url) as app:
        await app.start(ordering, 1, instance_id="o-1")
        await app.result("o-1")
        await app.start(counting, 2, 2, instance_id="c-1")
        await app.result("c-1")
        outbox = await _settled(app, 6)
        (failed,) = app.list_outbox(status="failed")

    assert (failed.event_type, failed.instance_id, failed.attempts) == ("order.placed", "o-1", 1)
    assert failed.last_error == f"HTTP 400 from {receiver.url}: no such type"
    assert [e.status for e in outbox if e.seq != failed.seq] == ["delivered"] * 5
    arrivals = receiver.all()
    assert [(a.type, a.status) for a in arrivals if a.type.startswith("order.")] == [
        ("order.placed", 400),  # tried once: sending it again cannot help
        ("order.confirmed", 202),  # the instance's next event was delivered after it
    ]
    assert _numbers([a for a in arrivals if a.type == "relay.numbered"], "c-1") == [0, 1, 2, 3]


async def test_headers_given_to_the_sender_reach_the_receiver(
    store_url: str, receiver: EventReceiver
) -> None:
    receiver.token = "s3cret-token"
    receiver.start()
    sender = HttpEventSender(receiver.url, headers={"Authorization": "Bearer s3cret-token"})
    async with _relaying(store_url, event_sender=sender) as app:
        await app.start(ordering, 1, instance_id="o-1")
        await app.result("o-1")
        outbox = await _settled(app, 2)
    assert [e.status for e in outbox] == ["delivered"] * 2
    assert [a.authorization for a in receiver.all()] == ["Bearer s3cret-token"] * 2


async def test_a_receiver_that_refuses_the_credentials_fails_the_events(
    store_url: str, receiver: EventReceiver
) -> None:
    receiver.token = "s3cret-token"
    receiver.start()
    sender = HttpEventSender(receiver.url, headers={"Authorization": "Bearer wrong"})
    async with _relaying(store_url, event_sender=sender) as app:
        await app.start(ordering, 1, instance_id="o-1")
        await app.result("o-1")
        outbox = await _settled(app, 2)
    assert [(e.status, e.attempts) for e in outbox] == [("failed", 1)] * 2
    assert all(e.last_error and e.last_error.startswith("HTTP 401 from ") for e in outbox)
    assert receiver.all() == []  # refused before it was parsed


async def test_a_relayer_taking_over_from_a_dead_one_sends_its_batch_at_once(
    store_url: str, receiver: EventReceiver
) -> None:
    """A relayer SIGKILLed mid-batch leaves its events leased to it (for a minute at
    least); the next leader ends those leases as it takes over, and sends them now."""
    async with rn.App(store_url) as app:  # nowhere to send: the events wait
        await app.start(ordering, 1, instance_id="o-1")
        await app.result("o-1")
    ghost = open_store(store_url)
    try:
        now = time.time()
        assert ghost.lead("outbox", "ghost-worker", now, 60.0)  # never registered: dead
        assert len(ghost.claim_outbox("ghost-worker", now, now + 3600, 100)) == 2
    finally:
        ghost.close()
    receiver.start()
    async with _relaying(store_url, broker_url=receiver.url) as app:
        outbox = await _settled(app, 2)  # within eventually's 30 s: not the lease's hour
    assert [(e.status, e.attempts) for e in outbox] == [("delivered", 1)] * 2
    assert [a.type for a in receiver.all()] == ["order.placed", "order.confirmed"]


async def test_a_relayer_closed_mid_delivery_leaves_its_batch_to_the_next_at_once(
    store_url: str, receiver: EventReceiver
) -> None:
    receiver.hold = 0.5
    receiver.start()
    async with _relaying(store_url, broker_url=receiver.url) as app:
        await app.start(ordering, 1, instance_id="o-1")
        await app.result("o-1")
        await eventually(lambda: receiver.in_flight == 1, message="a request held")
    # closed while the first event was being posted: both are pending, leased to no one
    receiver.hold = 0.0
    async with _relaying(store_url, broker_url=receiver.url) as app:
        outbox = await _settled(app, 2)  # within eventually's 30 s: not the lease's minute
    assert [e.status for e in outbox] == ["delivered"] * 2
    placed, *rest = receiver.all()
    assert placed.type == "order.placed"  # the cut-off post, sent again: at least once
    assert [a.type for a in rest] == ["order.placed", "order.confirmed"]
