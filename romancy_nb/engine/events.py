"""Events: ``ctx.wait_event`` and ``app.send_event`` (CloudEvents attributes).

An event is a broadcast message on the channel named by its type, with its CloudEvents
attributes (type, source, id, time, subject, extensions) in the message metadata — so events
get the channels' durability and wake-ups for free.

The rule for an event that arrives before anyone waits for it:

- An instance is *subscribed* to an event type from its first ``ctx.wait_event(type)`` (or
  an explicit ``await ctx.subscribe(type)``, to start listening earlier) until it ends,
  recurs or unsubscribes.
- Every event sent while an instance is subscribed is kept for it: if it is busy (running
  activities, sleeping, waiting on something else) the event waits, and its next
  ``wait_event(type)`` returns it at once. Events are returned one by one, oldest first.
- An event sent before the instance subscribed is not delivered to it (it was not
  listening). Subscribe first thing in the workflow if the event may come early.
- Sending an event twice with the same type and ``id`` stores it once (CloudEvents
  redelivery), within the message retention period.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from romancy_nb.engine import channels, codec
from romancy_nb.errors import EventTimeoutError
from romancy_nb.store import StepRecord
from romancy_nb.store.protocol import MessageRecord

if TYPE_CHECKING:
    from romancy_nb.engine.runtime import StepHost


@dataclass(frozen=True)
class ReceivedEvent:
    """An event delivered to a workflow by ``ctx.wait_event``."""

    type: str
    source: str
    id: str
    time: datetime | None
    data: Any
    extensions: dict[str, Any] = field(default_factory=dict)
    subject: str | None = None
    datacontenttype: str | None = None


def wait_event(
    run: StepHost, event_type: str, timeout: float | None, model: Any, wait_id: str | None
) -> Coroutine[Any, Any, Any]:
    channels.check_name("the event type", event_type)
    timeout = channels.check_timeout("wait_event", timeout)
    step_id = run.take_step_id("wait_event", wait_id)
    input_json = channels.step_input(event_type=event_type)
    return _wait_event(run, step_id, input_json, event_type, timeout, model)


async def _wait_event(
    run: StepHost,
    step_id: str,
    input_json: str,
    event_type: str,
    timeout: float | None,
    model: Any,
) -> ReceivedEvent:
    step = run.recorded(step_id, "wait_event", "wait_event", input_json)
    if step is None:
        step = await channels.take_or_suspend(
            run,
            step_id,
            "wait_event",
            input_json,
            event_type,
            timeout,
            "waiting_for_event",
            auto_subscribe=True,
        )
    if step.status == "timed_out":
        raise EventTimeoutError(
            f"no {event_type!r} event arrived within {timeout or 0:g} s",
            event_type=event_type,
            timeout=timeout,
        )
    channels.raise_if_failed(step)
    return event_from_step(step, event_type, model)


def event_from_step(step: StepRecord, event_type: str, model: Any) -> ReceivedEvent:
    out = json.loads(step.output or "{}")
    meta = out.get("metadata") or {}
    when = meta.get("time")
    return ReceivedEvent(
        type=meta.get("type", event_type),
        source=meta.get("source", ""),
        id=meta.get("id", out.get("id", "")),
        time=datetime.fromisoformat(when) if isinstance(when, str) else None,
        data=channels.decode_data(out.get("data"), model),
        extensions=meta.get("extensions") or {},
        subject=meta.get("subject"),
        datacontenttype=meta.get("datacontenttype"),
    )


def event_message(
    event_type: str,
    data: Any,
    *,
    source: str,
    id: str | None,
    time: datetime | None,
    subject: str | None,
    extensions: dict[str, Any] | None,
) -> MessageRecord:
    """The stored form of an event, checked first: bad input raises and stores nothing."""
    channels.check_name("the event type", event_type)
    if not isinstance(source, str):
        raise TypeError(f"the event source must be a string, not {type(source).__name__}")
    if id is not None and (not isinstance(id, str) or not id):
        raise ValueError(f"the event id must be a non-empty string, not {id!r}")
    if time is None:
        time = datetime.now(UTC)
    elif not isinstance(time, datetime) or time.tzinfo is None:
        raise ValueError(f"the event time must be a timezone-aware datetime, not {time!r}")
    if extensions is not None and not isinstance(extensions, dict):
        raise TypeError(f"extensions must be a dict, not {type(extensions).__name__}")
    event_id = id or str(uuid.uuid4())
    metadata = {
        "type": event_type,
        "source": source,
        "id": event_id,
        "time": time.isoformat(),
        "subject": subject,
        "datacontenttype": "application/json",
        "extensions": extensions or {},
    }
    return channels.new_message(
        event_type,
        channels.encode_data(data, f"the data of event {event_type!r}"),
        codec.encode(metadata, dict[str, Any], f"the attributes of event {event_type!r}"),
        message_id=event_id,
    )


__all__ = ["ReceivedEvent"]
