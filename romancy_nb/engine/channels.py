"""Channels: durable messages between workflows (and from the outside world).

Modes, fixed per channel by its subscribers (:class:`ChannelModeConflictError` otherwise):

- ``broadcast``: every subscriber receives every message published after it subscribed.
- ``competing``: each message goes to exactly one subscriber — taking it deletes it in the
  same transaction that records the taker's ``receive`` step, so it is consumed exactly once
  even with many consumers in many processes. Messages published before anyone subscribed
  wait for the first taker.
- ``direct``: messages sent to one instance with ``send_to``; kept for it (a mailbox) until
  it subscribes in ``direct`` mode and receives them.

Every operation is a recorded step (``subscribe:N``, ``receive:N``, ``publish:N``...), so a
replay neither publishes twice nor takes a second message. Messages are kept for
``App(message_retention=...)`` seconds (default 7 days); older ones are deleted by the sweep.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from romancy_nb.engine import codec, ids
from romancy_nb.engine.failures import error_from_json
from romancy_nb.errors import (
    ChannelMessageTimeoutError,
    ChannelModeConflictError,
    ChannelNotSubscribedError,
)
from romancy_nb.store import StepRecord
from romancy_nb.store.protocol import MessageRecord, WaitSpec

if TYPE_CHECKING:
    from romancy_nb.engine.runtime import StepHost

MODES = ("broadcast", "competing", "direct")


@dataclass(frozen=True)
class ChannelMessage:
    """A message received from a channel."""

    id: str
    channel: str
    data: Any
    metadata: dict[str, Any] = field(default_factory=dict)
    sender_instance_id: str | None = None
    created_at: datetime | None = None


def step_input(**fields: Any) -> str:
    """A wait-like step's input: canonical JSON, so the determinism check compares text."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def check_name(what: str, name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty string, not {name!r}")
    return name


def check_timeout(what: str, timeout: Any) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout != timeout:
        raise TypeError(f"{what} timeout must be a number of seconds or None, not {timeout!r}")
    return max(0.0, float(timeout))


def encode_data(data: Any, what: str) -> str:
    """JSON text of a message's data; a clear error (nothing stored) if it is not storable."""
    return codec.encode_message(data, what)


def encode_metadata(metadata: dict[str, Any] | None) -> str:
    if metadata is None:
        return "{}"
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
    return codec.encode(metadata, dict[str, Any], "message metadata")


def new_message(
    channel: str,
    data_json: str,
    metadata_json: str,
    *,
    target: str | None = None,
    sender: str | None = None,
    message_id: str | None = None,
) -> MessageRecord:
    return MessageRecord(
        0,
        message_id or uuid.uuid4().hex,
        channel,
        target,
        data_json,
        metadata_json,
        sender,
        time.time(),
    )


def decode_data(value: Any, model: Any) -> Any:
    return codec.decode_message(value, model, "the data of a received message")


def message_from_step(step: StepRecord, model: Any) -> ChannelMessage:
    out = json.loads(step.output or "{}")
    created = out.get("created_at")
    return ChannelMessage(
        out["id"],
        out["channel"],
        decode_data(out.get("data"), model),
        out.get("metadata") or {},
        out.get("sender_instance_id"),
        datetime.fromtimestamp(created, UTC) if created is not None else None,
    )


def raise_if_failed(step: StepRecord) -> None:
    if step.status == "failed":
        raise error_from_json(step.error or '{"type": "?", "message": "failed"}')


async def take_or_suspend(
    run: StepHost,
    step_id: str,
    kind: str,
    input_json: str,
    channel: str,
    timeout: float | None,
    status: str,
    *,
    auto_subscribe: bool = False,
) -> StepRecord:
    """At the live frontier: take the next message now, or suspend the instance on it.

    Returns the recorded step; a timeout of 0 with nothing there records ``timed_out``.
    """
    run.live_wait(status)
    store = run.store
    now = time.time()
    fire_at = None if timeout is None else now + timeout
    wait = WaitSpec(step_id, kind, kind, input_json, channel, fire_at)
    try:
        if auto_subscribe and (
            await run.write(store.get_subscription_mode, run.instance_id, channel) is None
        ):
            await run.write(store.subscribe, run.instance_id, run.owner, channel, "broadcast", None)
        step = await run.write(
            store.take_message, run.instance_id, run.owner, wait, run.next_seq(), now
        )
    except (ChannelNotSubscribedError, ChannelModeConflictError) as error:
        await run.fail(step_id, kind, input_json, error)
    if step is not None:
        return step
    if fire_at is not None and fire_at <= now:
        timed_out = run.new_step(step_id, kind, "timed_out", input_json, None)
        await run.record(timed_out)
        return timed_out
    run.suspend_on(wait, status)


# receive


def receive(
    run: StepHost, channel: str, timeout: float | None, model: Any, receive_id: str | None
) -> Coroutine[Any, Any, Any]:
    check_name("the channel", channel)
    timeout = check_timeout("receive", timeout)
    step_id = run.take_step_id("receive", receive_id)
    return _receive(run, step_id, step_input(channel=channel), channel, timeout, model)


async def _receive(
    run: StepHost,
    step_id: str,
    input_json: str,
    channel: str,
    timeout: float | None,
    model: Any,
) -> ChannelMessage:
    step = run.recorded(step_id, "receive", "receive", input_json)
    if step is None:
        step = await take_or_suspend(
            run, step_id, "receive", input_json, channel, timeout, "waiting_for_message"
        )
    if step.status == "timed_out":
        raise ChannelMessageTimeoutError(
            f"no message arrived on channel {channel!r} within {timeout or 0:g} s",
            channel=channel,
            timeout=timeout,
        )
    raise_if_failed(step)
    return message_from_step(step, model)


# subscriptions


def subscribe(run: StepHost, channel: str, mode: str) -> Coroutine[Any, Any, Any]:
    check_name("the channel", channel)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    step_id = run.take_step_id("subscribe", None)
    return _subscription_step(run, step_id, "subscribe", channel, mode)


def unsubscribe(run: StepHost, channel: str) -> Coroutine[Any, Any, Any]:
    check_name("the channel", channel)
    step_id = run.take_step_id("unsubscribe", None)
    return _subscription_step(run, step_id, "unsubscribe", channel, None)


async def _subscription_step(
    run: StepHost, step_id: str, kind: str, channel: str, mode: str | None
) -> None:
    input_json = (
        step_input(channel=channel, mode=mode) if mode is not None else step_input(channel=channel)
    )
    recorded = run.recorded(step_id, kind, kind, input_json)
    if recorded is not None:
        raise_if_failed(recorded)
        return
    step = run.new_step(step_id, kind, "completed", input_json, None)
    store = run.store
    try:
        if mode is None:
            await run.write(store.unsubscribe, run.instance_id, run.owner, channel, step)
        else:
            await run.write(store.subscribe, run.instance_id, run.owner, channel, mode, step)
    except ChannelModeConflictError as error:
        await run.fail(step_id, kind, input_json, error)


# sending


def publish(
    run: StepHost, channel: str, data: Any, metadata: dict[str, Any] | None
) -> Coroutine[Any, Any, Any]:
    check_name("the channel", channel)
    step_id = run.take_step_id("publish", None)
    return _send(
        run, step_id, "publish", step_input(channel=channel), channel, None, data, metadata
    )


def send_to(
    run: StepHost, instance_id: str, channel: str, data: Any, metadata: dict[str, Any] | None
) -> Coroutine[Any, Any, str]:
    ids.validate_instance_id(instance_id)
    check_name("the channel", channel)
    step_id = run.take_step_id("send_to", None)
    input_json = step_input(channel=channel, instance_id=instance_id)
    return _send(run, step_id, "send_to", input_json, channel, instance_id, data, metadata)


async def _send(
    run: StepHost,
    step_id: str,
    kind: str,
    input_json: str,
    channel: str,
    target: str | None,
    data: Any,
    metadata: dict[str, Any] | None,
) -> str:
    recorded = run.recorded(step_id, kind, kind, input_json)
    if recorded is not None:
        raise_if_failed(recorded)
        message_id: str = json.loads(recorded.output or "{}")["message_id"]
        return message_id
    message = new_message(
        channel,
        encode_data(data, f"the data sent on channel {channel!r}"),
        encode_metadata(metadata),
        target=target,
        sender=run.instance_id,
    )
    output = json.dumps({"message_id": message.message_id})
    step = run.new_step(step_id, kind, "completed", input_json, output)
    await run.write(run.store.publish, message, step, run.owner)
    run.message_published(channel)
    return message.message_id


__all__ = ["MODES", "ChannelMessage"]
