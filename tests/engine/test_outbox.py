"""``ctx.send_event`` and the outbox relayer, on every backend.

The relayer sends to :class:`Receiver`, an ``EventSender`` of this test that keeps what it
got and answers as it is told (down for a while, refusing a type). Over real HTTP the
same relayer is tested in tests/edges/test_http_relay.py.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import romancy_nb as rn
from romancy_nb.engine.outbox import Delivery, cloud_event_attributes
from romancy_nb.store.protocol import OutboxRecord
from romancy_nb.testing import eventually
from tests.conftest import FAST_RETRY, TableReader
from tests.sql import append_row

QUICK = rn.RetryPolicy.fixed(4, 0.01)
"""The relayer's retries in these tests: four attempts, 10 ms apart."""


class Receiver:
    """Where the relayer sends: ``down`` answers that many sends with a retry."""

    def __init__(self) -> None:
        self.got: list[OutboxRecord] = []
        self.down = 0
        self.refused: set[str] = set()
        self.closed = False

    async def send(self, event: OutboxRecord) -> Delivery:
        if self.down > 0:
            self.down -= 1
            return Delivery("retry", "the receiver is down")
        if event.event_type in self.refused:
            return Delivery("failed", "HTTP 400: no such type")
        self.got.append(event)
        return Delivery("delivered")

    async def aclose(self) -> None:
        self.closed = True

    def data(self, instance_id: str | None = None) -> list[Any]:
        return [
            json.loads(e.data)
            for e in self.got
            if instance_id is None or e.instance_id == instance_id
        ]


ran: Counter[str] = Counter()
"""How often ``announce`` ran, per instance."""
failures: Counter[str] = Counter()
"""How often ``charge_once`` failed, per instance."""


@pytest.fixture(autouse=True)
def _fresh_counts() -> None:
    """Instance ids repeat across backends: each test counts from zero."""
    ran.clear()
    failures.clear()


@rn.activity(transactional=False)
async def announce(ctx: rn.ActivityContext, n: int) -> str:
    ran[ctx.instance_id] += 1
    first = ctx.send_event("order.placed", {"n": n}, subject=f"order-{n}",
                           extensions={"tenant": "acme"})  # fmt: skip
    ctx.send_event("order.confirmed", {"n": n})
    return first


@rn.workflow
async def announcing(ctx: rn.WorkflowContext, n: int) -> str:
    return await announce(ctx, n)


@pytest.fixture
async def receiver_app(store_url: str) -> AsyncIterator[tuple[Receiver, rn.App]]:
    receiver = Receiver()
    app = rn.App(store_url, event_sender=receiver, outbox_interval=0.05, outbox_retry=QUICK)
    async with app:
        yield receiver, app


async def _delivered(receiver: Receiver, count: int) -> None:
    await eventually(lambda: len(receiver.got) >= count, message=f"{count} events delivered")


async def _settled(app: rn.App) -> list[OutboxRecord]:
    """The outbox, oldest first, once no event is pending (each was settled)."""
    await eventually(lambda: not app.list_outbox(status="pending"), message="events settled")
    return sorted(app.list_outbox(), key=lambda e: e.seq)


async def test_events_a_step_sends_are_delivered_in_order_as_cloud_events(
    receiver_app: tuple[Receiver, rn.App],
) -> None:
    receiver, app = receiver_app
    event_id = await app.start(announcing, 7, instance_id="o-7") and await app.result("o-7")
    await _delivered(receiver, 2)

    placed, confirmed = receiver.got
    assert (placed.event_type, confirmed.event_type) == ("order.placed", "order.confirmed")
    assert placed.event_id == event_id and (placed.instance_id, placed.step_id) == (
        "o-7",
        "announce:1",
    )
    attributes = cloud_event_attributes(placed)
    assert attributes["source"] == "romancy_nb/announcing"
    assert (attributes["subject"], attributes["tenant"]) == ("order-7", "acme")
    assert receiver.data() == [{"n": 7}, {"n": 7}]
    outbox = await _settled(app)
    assert [(e.status, e.attempts) for e in outbox] == [("delivered", 1), ("delivered", 1)]


async def test_a_replayed_step_sends_nothing_again(store_url: str) -> None:
    receiver = Receiver()
    async with rn.App(store_url, event_sender=receiver, outbox_interval=0.05) as app:
        await app.start(announcing, 1, instance_id="o-1")
        await app.result("o-1")
        await _delivered(receiver, 2)
    async with rn.App(store_url, event_sender=receiver, outbox_interval=0.05) as app:
        report = await app.replay("o-1")
        assert report.outcome == "completed"  # from history: the activity did not run
        await app.rewind("o-1", to="announce:1")  # keeps the step: nothing runs again
        assert await app.result("o-1") == receiver.got[0].event_id
        await asyncio.sleep(0.2)  # several relay intervals
        outbox = app.list_outbox()  # while open: after close() it would reopen the store
    assert ran["o-1"] == 1
    assert len(receiver.got) == 2 and len(outbox) == 2


@rn.activity
def charge_once(ctx: rn.ActivityContext, amount: int) -> int:
    """Writes a row and sends an event, then fails on its first attempt: the row and the
    event of that attempt roll back with it."""
    append_row(ctx.session, "charges", "instance_id TEXT, attempt INTEGER",
               (ctx.instance_id, ctx.attempt))  # fmt: skip
    ctx.send_event("payment.charged", {"amount": amount, "attempt": ctx.attempt})
    if ctx.attempt == 1:
        failures[ctx.instance_id] += 1
        raise RuntimeError("the card network timed out")
    return amount


@rn.workflow
async def charging(ctx: rn.WorkflowContext, amount: int) -> int:
    return await charge_once(ctx, amount)


async def test_an_attempt_that_fails_sends_nothing_and_its_retry_sends_once(
    receiver_app: tuple[Receiver, rn.App], table_rows: TableReader
) -> None:
    receiver, app = receiver_app
    app.default_retry = FAST_RETRY
    await app.start(charging, 30, instance_id="pay-1")
    assert await app.result("pay-1") == 30
    await _delivered(receiver, 1)
    await asyncio.sleep(0.2)

    assert failures["pay-1"] == 1
    assert receiver.data() == [{"amount": 30, "attempt": 2}]
    assert table_rows("charges") == [("pay-1", 2)]
    assert len(app.list_outbox()) == 1


async def test_a_receiver_that_is_down_delays_delivery_and_keeps_the_order(
    receiver_app: tuple[Receiver, rn.App],
) -> None:
    receiver, app = receiver_app
    receiver.down = 2  # the first event of the first batch fails twice
    await app.start(announcing, 1, instance_id="o-1")
    await app.result("o-1")
    await _delivered(receiver, 2)

    assert [e.event_type for e in receiver.got] == ["order.placed", "order.confirmed"]
    placed, confirmed = await _settled(app)
    assert (placed.status, placed.attempts, placed.last_error) == (
        "delivered",
        3,
        "the receiver is down",
    )
    assert (confirmed.status, confirmed.attempts) == ("delivered", 1)


async def test_a_refused_event_fails_and_the_next_one_goes_on(
    receiver_app: tuple[Receiver, rn.App],
) -> None:
    receiver, app = receiver_app
    receiver.refused.add("order.placed")
    await app.start(announcing, 1, instance_id="o-1")
    await app.result("o-1")
    await _delivered(receiver, 1)

    assert [e.event_type for e in receiver.got] == ["order.confirmed"]
    failed, _ = await _settled(app)
    assert (failed.event_type, failed.attempts, failed.last_error) == (
        "order.placed",
        1,
        "HTTP 400: no such type",
    )


async def test_retries_that_run_out_fail_the_event(
    receiver_app: tuple[Receiver, rn.App],
) -> None:
    receiver, app = receiver_app
    receiver.down = 1000
    await app.start(announcing, 1, instance_id="o-1")
    await app.result("o-1")
    await eventually(lambda: bool(app.list_outbox(status="failed")), message="given up")

    (failed,) = app.list_outbox(status="failed")
    assert failed.attempts == QUICK.max_attempts
    assert failed.last_error == "gave up after 4 attempts: the receiver is down"
    assert receiver.got == []


async def test_events_written_without_a_relayer_wait_for_one(store_url: str) -> None:
    async with rn.App(store_url) as app:  # nowhere to send
        await app.start(announcing, 1, instance_id="o-1")
        await app.result("o-1")
        assert [e.status for e in app.list_outbox()] == ["pending", "pending"]
    receiver = Receiver()
    async with rn.App(store_url, event_sender=receiver, outbox_interval=0.05):
        await _delivered(receiver, 2)
    assert receiver.closed  # the app closed its sender
    assert [e.event_type for e in receiver.got] == ["order.placed", "order.confirmed"]


async def test_two_apps_on_one_database_deliver_each_event_once(store_url: str) -> None:
    first, second = Receiver(), Receiver()
    async with (
        rn.App(store_url, event_sender=first, outbox_interval=0.02) as one,
        rn.App(store_url, event_sender=second, outbox_interval=0.02) as two,
    ):
        for n in range(10):
            await (one if n % 2 else two).start(announcing, n, instance_id=f"o-{n}")
        for n in range(10):
            await one.result(f"o-{n}")
        await eventually(lambda: len(first.got) + len(second.got) >= 20, message="all sent")
        await asyncio.sleep(0.2)
    got = first.got + second.got
    assert len(got) == 20 and len({e.event_id for e in got}) == 20
    assert not (first.got and second.got)  # one relayer: the outbox leader


BAD_CALLS: dict[str, tuple[Callable[[rn.ActivityContext], Any], type[Exception], str]] = {
    "data": (lambda ctx: ctx.send_event("t", {1, 2}), rn.SerializationError, "holds a set"),
    "type": (lambda ctx: ctx.send_event("", {}), ValueError, "event type"),
    "extension name": (
        lambda ctx: ctx.send_event("t", extensions={"Bad-Name": "x"}),
        ValueError,
        "lower-case",
    ),
    "extension value": (
        lambda ctx: ctx.send_event("t", extensions={"when": 1.5}),
        TypeError,
        "float",
    ),
    "reserved": (lambda ctx: ctx.send_event("t", extensions={"source": "x"}), ValueError, "attr"),
    "subject": (lambda ctx: ctx.send_event("t", subject=3), TypeError, "subject"),
}


@rn.activity(retry=rn.RetryPolicy.none(), transactional=False)
def send_badly(ctx: rn.ActivityContext, case: str) -> None:
    BAD_CALLS[case][0](ctx)


@rn.workflow
async def sending_badly(ctx: rn.WorkflowContext, case: str) -> None:
    await send_badly(ctx, case)


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
async def test_bad_input_raises_at_the_call_and_sends_nothing(
    receiver_app: tuple[Receiver, rn.App], case: str
) -> None:
    _, app = receiver_app
    _, error, words = BAD_CALLS[case]
    await app.start(sending_badly, case, instance_id=f"bad-{case.replace(' ', '-')}")
    with pytest.raises(Exception) as raised:
        await app.result(f"bad-{case.replace(' ', '-')}")
    # unstorable data fails the step as it is; any other error after its one attempt
    cause = raised.value
    if isinstance(cause, rn.RetryExhaustedError):
        cause = cause.__cause__
    assert isinstance(cause, error) and words in str(cause)
    assert app.list_outbox() == []


async def test_the_outbox_settings_are_checked(store_url: str) -> None:
    with pytest.raises(ValueError, match="not both"):
        rn.App(store_url, broker_url="http://x", event_sender=Receiver())
    with pytest.raises(ValueError, match="outbox_batch_size"):
        rn.App(store_url, outbox_batch_size=0)
    app = rn.App(store_url)
    try:
        with pytest.raises(ValueError, match="status must be one of"):
            app.list_outbox(status="sent")
    finally:
        await app.close()
