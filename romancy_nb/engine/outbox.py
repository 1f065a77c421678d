"""The transactional outbox: ``ctx.send_event`` in an activity, delivered by a relayer.

Why an outbox: an activity that posts an event to a broker itself either posts it before
its step is recorded (a crash then posts it again on resume) or after (a crash loses it).
``ctx.send_event`` instead writes the event in the step's own transaction — with the
history record, and with the activity's ``ctx.session`` writes when it has any — so the
event exists exactly when the step completed: an attempt that fails, times out or is
rolled back sends nothing, and a replayed step sends nothing again.

The relayer then delivers what is written, **at least once** and **in order per
instance**: it leases a batch from the store, sends each instance's events one after the
other (instances side by side), and settles each: delivered, retried later with
exponential backoff (the app's ``outbox_retry``; a receiver that is down just delays
delivery), or failed for good (a receiver that refuses the event, or the retries ran out).
An instance's later events wait behind an earlier one that must be retried. A relayer that
dies mid-batch leaves its batch leased to it: the next leader ends those leases as it
takes over (one that closes ends its own) and sends those events again, so a receiver
should deduplicate by the CloudEvents ``id``.

One relayer per database: the holder of the ``outbox`` leadership, among the apps that
have somewhere to send to (``App(broker_url=...)`` or ``App(event_sender=...)``). An app
without either still writes events; they wait in the outbox for a relayer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from romancy_nb.engine import events
from romancy_nb.engine.leadership import Leadership
from romancy_nb.engine.signals import StoreFault
from romancy_nb.store.protocol import OutboxEvent, OutboxOutcome, OutboxRecord

if TYPE_CHECKING:
    from romancy_nb.engine.gate import StoreGate
    from romancy_nb.engine.retry import RetryPolicy
    from romancy_nb.store import Store

log = logging.getLogger("romancy_nb")

ROLE = "outbox"
"""The leadership role of the one relayer per database."""

_LANES = 4
"""How many instances' events are posted side by side: enough to overlap round trips, few
enough that the HTTP client does not spend more on juggling connections than it saves
(on loopback, one relayer: 4 lanes delivered 360 events/s, 8 lanes 220, 32 lanes 170)."""

_EXTENSION_NAME = re.compile(r"[a-z0-9]{1,20}")
_CONTEXT_ATTRIBUTES = frozenset(
    {"id", "source", "specversion", "type", "datacontenttype", "dataschema", "subject", "time"}
)


class Delivery(NamedTuple):
    """What an :class:`EventSender` made of one event: ``delivered``, ``retry`` (a
    transient failure: the receiver is down, busy or failed; ``retry_after`` seconds if
    it said so) or ``failed`` (it refused the event: sending it again cannot help)."""

    outcome: Literal["delivered", "retry", "failed"]
    reason: str | None = None
    retry_after: float | None = None


class EventSender(Protocol):
    """Where the relayer sends events: ``romancy_nb.http.relay.HttpEventSender`` posts them
    as CloudEvents over HTTP (``App(broker_url=...)``); give another to
    ``App(event_sender=...)`` (a message queue, a test's receiver)."""

    async def send(self, event: OutboxRecord) -> Delivery:
        """Deliver one event. Raising counts as ``retry`` with the error as the reason."""

    async def aclose(self) -> None:
        """Release connections (the app is closing)."""


def cloud_event_attributes(event: OutboxRecord) -> dict[str, Any]:
    """The event's CloudEvents attributes, extensions flattened in (``time`` a datetime)."""
    stored = json.loads(event.attributes)
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": event.event_id,
        "type": event.event_type,
        "source": stored["source"],
        "time": datetime.fromisoformat(stored["time"]),
        "datacontenttype": stored.get("datacontenttype") or "application/json",
    }
    if stored.get("subject") is not None:
        attributes["subject"] = stored["subject"]
    attributes.update(stored.get("extensions") or {})
    return attributes


def outbox_event(
    instance_id: str,
    step_id: str,
    event_type: str,
    data: Any,
    *,
    source: str,
    id: str | None,
    time: datetime | None,
    subject: str | None,
    extensions: dict[str, Any] | None,
) -> OutboxEvent:
    """Check and encode an event for the outbox: bad input raises here, at the call."""
    if subject is not None and not isinstance(subject, str):
        raise TypeError(f"the event subject must be a string, not {type(subject).__name__}")
    if not source:
        raise ValueError("the event source must be a non-empty string (a URI reference)")
    _check_extensions(extensions)
    message = events.event_message(
        event_type, data, source=source, id=id, time=time, subject=subject,
        extensions=extensions,
    )  # fmt: skip
    return OutboxEvent(
        message.message_id, instance_id, step_id, event_type, message.data, message.metadata,
        message.created_at,
    )  # fmt: skip


def _check_extensions(extensions: dict[str, Any] | None) -> None:
    """CloudEvents extension attributes: lower-case letters and digits (at most 20), not a
    context attribute's name, a string, integer or boolean value."""
    if not isinstance(extensions, dict):
        return  # None, or event_message's own type error
    for name, value in extensions.items():
        if not isinstance(name, str) or not _EXTENSION_NAME.fullmatch(name):
            raise ValueError(
                f"CloudEvents extension names are 1-20 lower-case letters or digits: {name!r}"
            )
        if name in _CONTEXT_ATTRIBUTES:
            raise ValueError(f"{name!r} is a CloudEvents attribute, not an extension")
        if not isinstance(value, str | int | bool):
            raise TypeError(
                f"CloudEvents extension {name!r} must be a string, integer or boolean, "
                f"not {type(value).__name__}"
            )


class OutboxRelay:
    """Delivers the outbox while this app leads the ``outbox`` role."""

    def __init__(
        self,
        store: Store,
        gate: StoreGate,
        worker_id: str,
        sender: EventSender,
        *,
        retry: RetryPolicy,
        batch_size: int,
        interval: float,
        lease_seconds: float,
    ) -> None:
        self._store = store
        self._gate = gate
        self._worker_id = worker_id
        self._sender = sender
        self._retry = retry
        self._batch_size = batch_size
        self._interval = interval
        self._lease = max(60.0, lease_seconds)
        """How long a claimed batch is this relayer's: long enough for slow receivers."""
        self._leadership = Leadership(store, gate, worker_id, lease_seconds, role=ROLE)
        self._renew_every = lease_seconds / 3
        self._renewed_at = -float("inf")
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._task = loop.create_task(self._relay_forever(), name="romancy-outbox")

    def wake(self) -> None:
        """Events were written here: look now, not at the next interval."""
        self._woken.set()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        with contextlib.suppress(Exception, StoreFault):  # else the leases expire anyway
            # what this relayer still holds (chains it had not begun) is the next one's now
            await self._gate.call(self._store.release_outbox, self._worker_id)
            await self._leadership.resign()
        await self._sender.aclose()

    async def _relay_forever(self) -> None:
        faults = 0
        while True:
            try:
                sent = await self.relay_once() if await self._leads() else 0
                faults = 0
            except (Exception, StoreFault) as error:
                faults += 1
                log.warning("relaying the outbox failed (%s); retried later", error)
                await self._gate.backoff(faults)
                continue
            if sent < self._batch_size:  # a full batch: there may be more, go on at once
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel
                # that lands as the event is set, and closing the app would wait forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval):
                        await self._woken.wait()
                self._woken.clear()

    async def _leads(self) -> bool:
        now = time.monotonic()
        if now - self._renewed_at >= self._renew_every or not self._leadership.is_leader:
            led = self._leadership.is_leader
            held = None if led else await self._gate.call(self._store.leader, ROLE)
            await self._leadership.renew()
            self._renewed_at = now
            if not led and self._leadership.is_leader and held and held[0] != self._worker_id:
                await self._release(held[0])
        return self._leadership.is_leader

    async def _release(self, worker_id: str) -> None:
        """This relayer took over from ``worker_id`` (dead, or its lease ran out): end its
        leases on the events it claimed, as they were, so they are sent again now rather
        than when the leases run out (a SIGKILLed relayer's batch would wait a minute).
        Only rows still leased to it change; what it delivered meanwhile stays delivered."""
        released = await self._gate.call(self._store.release_outbox, worker_id)
        if released:
            log.info("took %d outbox event(s) over from %s", released, worker_id)

    async def relay_once(self) -> int:
        """Claim one batch and deliver it; how many events it held."""
        now = time.time()
        batch = await self._gate.call(
            self._store.claim_outbox, self._worker_id, now, now + self._lease, self._batch_size
        )
        if batch:
            # A few instances' chains at a time: a hundred posts in flight at once cost the
            # HTTP client more in connection juggling than they gain (measured: bench/outbox.py).
            lanes = asyncio.Semaphore(_LANES)

            async def deliver(chain: list[OutboxRecord]) -> None:
                async with lanes:
                    await self._deliver(chain)

            await asyncio.gather(*(deliver(chain) for chain in _by_instance(batch)))
        return len(batch)

    async def _deliver(self, chain: list[OutboxRecord]) -> None:
        """One instance's events in order; those behind one that must wait are left pending."""
        outcomes: list[OutboxOutcome] = []
        for position, event in enumerate(chain):
            try:
                delivery = await self._send(event)
            except asyncio.CancelledError:  # the app is closing: settle what is known
                now = time.time()
                outcomes.extend(  # untried or cut off: released for the next relayer now
                    OutboxOutcome(e.seq, "pending", e.attempts, e.next_attempt_at, None, now)
                    for e in chain[position:]
                )
                with contextlib.suppress(Exception, StoreFault):  # else its lease runs out
                    await self._gate.call(self._store.settle_outbox, self._worker_id, outcomes)
                raise
            outcome = self._outcome(event, delivery)
            outcomes.append(outcome)
            if outcome.status == "pending":
                now = time.time()
                outcomes.extend(  # untried: released as they were
                    OutboxOutcome(e.seq, "pending", e.attempts, e.next_attempt_at, None, now)
                    for e in chain[position + 1 :]
                )
                break
        await self._gate.call(self._store.settle_outbox, self._worker_id, outcomes)

    async def _send(self, event: OutboxRecord) -> Delivery:
        try:
            return await self._sender.send(event)
        except Exception as error:
            return Delivery("retry", f"{type(error).__name__}: {error}")

    def _outcome(self, event: OutboxRecord, delivery: Delivery) -> OutboxOutcome:
        now, attempts = time.time(), event.attempts + 1
        if delivery.outcome == "delivered":
            return OutboxOutcome(event.seq, "delivered", attempts, event.next_attempt_at, None, now)
        reason = delivery.reason or delivery.outcome
        if delivery.outcome == "failed" or attempts >= self._retry.max_attempts:
            if delivery.outcome == "retry":
                reason = f"gave up after {attempts} attempts: {reason}"
            log.error("outbox event %s (%s) failed: %s", event.event_id, event.event_type, reason)
            return OutboxOutcome(event.seq, "failed", attempts, event.next_attempt_at, reason, now)
        delay = max(self._retry.delay(attempts), delivery.retry_after or 0.0)
        log.info(
            "outbox event %s (%s) not delivered (%s); retrying in %.3g s",
            event.event_id, event.event_type, reason, delay,
        )  # fmt: skip
        return OutboxOutcome(event.seq, "pending", attempts, now + delay, reason, now)


def _by_instance(batch: Iterable[OutboxRecord]) -> list[list[OutboxRecord]]:
    chains: dict[str, list[OutboxRecord]] = {}
    for event in sorted(batch, key=lambda e: e.seq):
        chains.setdefault(event.instance_id, []).append(event)
    return list(chains.values())


__all__ = ["Delivery", "EventSender", "OutboxRelay", "cloud_event_attributes", "outbox_event"]
