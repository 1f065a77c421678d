"""Durable waiting, the run's side: how a workflow waits without holding a coroutine.

A wait that history answers returns at once (replay). A wait at the live frontier first
tries to end at once (a message is already there, the sleep is already over); otherwise it
raises :class:`~romancy_nb.engine.signals.SuspendSignal`. The runner then calls
:meth:`WaitingRun._suspended`, which asks the store, in one transaction, to register the
wait, set the status and release the lease. The run ends: no coroutine, no memory. Whoever
ends the wait later (an in-memory timer, a publisher, another process's watcher, a sweep)
records the wait's step and takes the lease in one transaction, then replays the instance,
which finds the step in history and goes on.

``WorkflowRun`` inherits :class:`WaitingRun`; ``WorkflowContext`` inherits
:class:`WaitingContext`, whose methods are one-line calls into the run, as the rest of the
context is. Timers, events, channels and groups live in their own modules.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from romancy_nb.engine import channels, events, groups, timers
from romancy_nb.engine.failures import error_to_json
from romancy_nb.engine.signals import CancelSignal, LeaseLostSignal, RecurSignal, SuspendSignal
from romancy_nb.errors import LockLostError
from romancy_nb.store import StepRecord
from romancy_nb.store.protocol import WaitSpec

if TYPE_CHECKING:
    from collections.abc import Iterator

    from romancy_nb.engine.app import App
    from romancy_nb.engine.channels import ChannelMessage
    from romancy_nb.engine.definitions import Workflow
    from romancy_nb.engine.events import ReceivedEvent
    from romancy_nb.engine.replay import StepIds
    from romancy_nb.engine.runner import Outcome

T = TypeVar("T")


class WaitingRun:
    """Mixin of ``WorkflowRun``: waits, their suspension, and ``recur``."""

    _waits: list[WaitSpec] | None = None

    if TYPE_CHECKING:  # provided by WorkflowRun
        app: App
        workflow: Workflow[Any, Any]
        instance_id: str
        owner: str
        cancel_reason: str | None
        _input_json: str
        _ids: StepIds
        _seq: Iterator[int]

        def _recorded(self, step_id: str, kind: str, name: str, input_json: str | None) -> Any: ...

        def _record(self, *args: Any, **kwargs: Any) -> None: ...  # see WorkflowRun._record

    # helpers for timers / events / channels / groups

    def _wait_id(self, name: str, explicit: str | None) -> str:
        """The step id of a wait, taken when the call is made (so gather order holds)."""
        return self._ids.take(name, explicit, self.instance_id)

    def _step_record(
        self, step_id: str, kind: str, status: str, input_json: str | None, output: str | None
    ) -> StepRecord:
        at = time.time()
        return StepRecord(
            self.instance_id,
            next(self._seq),
            step_id,
            kind,
            kind,
            status,
            input_json,
            output,
            None,
            1,
            at,
            at,
        )

    def _store(self, method: Callable[..., T], *args: Any) -> T:
        """Call a lease-checked store method; a lost lease stops the run."""
        try:
            return method(*args)
        except LockLostError:
            raise LeaseLostSignal(self.instance_id) from None

    def _fail(self, step_id: str, kind: str, input_json: str | None, error: Exception) -> NoReturn:
        """Record a wait-like step as failed (replay raises the same error), then raise."""
        at = time.time()
        self._record(
            step_id, kind, kind, "failed", input_json, None, error_to_json(error), 1, at, at
        )
        raise error

    def _live_wait(self, status: str) -> None:
        """At the live frontier of a wait: a replay-only run (``app.replay``) stops here."""
        if getattr(self, "replay_only", False):
            raise SuspendSignal(status)  # reported as "the workflow would wait (status)"
        self._check_cancel()

    def _check_cancel(self) -> None:
        """A cancelled instance stops at its next live wait (and takes no message)."""
        if self.cancel_reason is not None:
            raise CancelSignal(self.cancel_reason)

    def _suspend_on(self, wait: WaitSpec, status: str) -> NoReturn:
        self._check_cancel()
        if self._waits is None:
            self._waits = []
        self._waits.append(wait)
        raise SuspendSignal(status)

    # what the runner calls

    async def _suspended(self, signal: SuspendSignal) -> Outcome:
        """The workflow raised a suspension: register its waits (or recur) and end the run."""
        from romancy_nb.engine.runner import Outcome

        if isinstance(signal, RecurSignal):
            return self._recurred(signal)
        waits, self._waits = self._waits or [], None
        store = self.app.store
        if not waits:  # a bare SuspendSignal: keep the status, release the lease
            store.set_status(self.instance_id, self.owner, signal.status)
            store.release_instance(self.instance_id, self.owner)
            return Outcome("suspended")
        answered = self._store(
            store.suspend,
            self.instance_id,
            self.owner,
            signal.status,
            waits,
            next(self._seq),
            time.time(),
        )
        if answered is not None:  # ended while we were suspending: replay now, lease kept
            self.app._launch(self._fresh_run(self._input_json, None))
        else:
            self.app._waits_registered(waits)
        return Outcome("suspended")

    def _recurred(self, signal: RecurSignal) -> Outcome:
        from romancy_nb.engine.runner import Outcome

        self._waits = None
        self._store(
            self.app.store.recur, self.instance_id, self.owner, signal.input_json, time.time()
        )
        self.app._launch(self._fresh_run(signal.input_json, signal.values, history=False))
        return Outcome("recurred")

    def _fresh_run(
        self, input_json: str, values: tuple[Any, ...] | None, *, history: bool = True
    ) -> WaitingRun:
        store = self.app.store
        return type(self)(  # type: ignore[call-arg]
            self.app,
            self.workflow,
            self.instance_id,
            input_json=input_json,
            args=values,
            history=store.load_history(self.instance_id) if history else (),
            attempts=store.load_attempts(self.instance_id) if history else (),
            cancel_reason=self.cancel_reason,
        )

    # the runtime API that WaitingContext calls

    def sleep(self, seconds: float, timer_id: str | None) -> Awaitable[None]:
        return timers.sleep(self, seconds, timer_id)

    def sleep_until(self, when: datetime, timer_id: str | None) -> Awaitable[None]:
        return timers.sleep_until(self, when, timer_id)

    def wait_event(
        self, event_type: str, timeout: float | None, model: Any, wait_id: str | None
    ) -> Awaitable[ReceivedEvent]:
        return events.wait_event(self, event_type, timeout, model, wait_id)

    def subscribe(self, channel: str, mode: str) -> Awaitable[None]:
        return channels.subscribe(self, channel, mode)

    def unsubscribe(self, channel: str) -> Awaitable[None]:
        return channels.unsubscribe(self, channel)

    def receive(
        self, channel: str, timeout: float | None, model: Any, receive_id: str | None
    ) -> Awaitable[ChannelMessage]:
        return channels.receive(self, channel, timeout, model, receive_id)

    def publish(self, channel: str, data: Any, metadata: dict[str, Any] | None) -> Awaitable[str]:
        return channels.publish(self, channel, data, metadata)

    def send_to(
        self, instance_id: str, channel: str, data: Any, metadata: dict[str, Any] | None
    ) -> Awaitable[str]:
        return channels.send_to(self, instance_id, channel, data, metadata)

    def join_group(self, group: str) -> Awaitable[None]:
        return groups.join_group(self, group)

    def leave_group(self, group: str) -> Awaitable[None]:
        return groups.leave_group(self, group)

    def recur(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> NoReturn:
        shape = self.workflow.shape
        values = shape.validate_input(shape.bind(args, kwargs))
        raise RecurSignal(values, shape.encode_input(values))


class WaitingContext:
    """Mixin of ``WorkflowContext``: everything a workflow can wait on, and ``recur``."""

    __slots__ = ()

    _runtime: WaitingRun

    def sleep(self, seconds: float, *, timer_id: str | None = None) -> Awaitable[None]:
        """Wait ``seconds`` durably: the instance is unloaded and resumed when the timer fires.

        The instance goes to ``waiting_for_timer`` and holds no coroutine or lease meanwhile;
        a restart does not restart the timer. ``timer_id`` names the step (default
        ``sleep:N``).
        """
        return self._runtime.sleep(seconds, timer_id)

    def sleep_until(self, when: datetime, *, timer_id: str | None = None) -> Awaitable[None]:
        """Wait durably until ``when``, a timezone-aware datetime (naive ones are rejected)."""
        return self._runtime.sleep_until(when, timer_id)

    def wait_event(
        self,
        event_type: str,
        timeout: float | None = None,
        *,
        model: Any = None,
        wait_id: str | None = None,
    ) -> Awaitable[ReceivedEvent]:
        """Wait for the next event of ``event_type`` (sent with ``app.send_event``).

        The first ``wait_event`` (or an earlier ``ctx.subscribe(event_type)``) subscribes
        the instance to the type: from then on every event of that type is kept for it, so
        one that arrives while the workflow is busy elsewhere is not lost; events sent before
        the subscription are not delivered to it. ``timeout`` seconds without an event raise
        :class:`~romancy_nb.errors.EventTimeoutError` in the workflow. ``model`` decodes the
        event's data to that type.
        """
        return self._runtime.wait_event(event_type, timeout, model, wait_id)

    def subscribe(self, channel: str, mode: str = "broadcast") -> Awaitable[None]:
        """Listen on ``channel``: ``broadcast`` (every subscriber gets every message published
        from now on), ``competing`` (each message goes to exactly one subscriber; messages
        published before are taken too) or ``direct`` (messages sent to this instance with
        ``ctx.send_to``). Raises :class:`~romancy_nb.errors.ChannelModeConflictError` if
        other instances listen in another mode."""
        return self._runtime.subscribe(channel, mode)

    def unsubscribe(self, channel: str) -> Awaitable[None]:
        """Stop listening on ``channel`` (subscriptions also end with the instance)."""
        return self._runtime.unsubscribe(channel)

    def receive(
        self,
        channel: str,
        timeout: float | None = None,
        *,
        model: Any = None,
        receive_id: str | None = None,
    ) -> Awaitable[ChannelMessage]:
        """The next message for this instance on a subscribed channel; waits durably.

        ``timeout`` seconds without one raise
        :class:`~romancy_nb.errors.ChannelMessageTimeoutError`; receiving without a
        subscription raises :class:`~romancy_nb.errors.ChannelNotSubscribedError`.
        """
        return self._runtime.receive(channel, timeout, model, receive_id)

    def publish(
        self, channel: str, data: Any, metadata: dict[str, Any] | None = None
    ) -> Awaitable[str]:
        """Publish ``data`` (JSON-serializable) on ``channel``, once; returns the message id."""
        return self._runtime.publish(channel, data, metadata)

    def send_to(
        self,
        instance_id: str,
        channel: str,
        data: Any,
        metadata: dict[str, Any] | None = None,
    ) -> Awaitable[str]:
        """Send ``data`` to one instance, which receives it on ``channel`` subscribed in
        ``direct`` mode (kept for it until then); returns the message id."""
        return self._runtime.send_to(instance_id, channel, data, metadata)

    def join_group(self, group: str) -> Awaitable[None]:
        """Become a member of ``group`` (see ``app.get_group_members``) until leaving it,
        recurring or ending."""
        return self._runtime.join_group(group)

    def leave_group(self, group: str) -> Awaitable[None]:
        """Stop being a member of ``group``."""
        return self._runtime.leave_group(group)

    def recur(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Continue as a fresh run of this instance with new input (Erlang-style recursion).

        The current history is archived (its run kept with status ``recurred``), waits,
        subscriptions and group memberships are dropped, and the workflow starts again from
        the top with these arguments, under the same instance id. Nothing after it runs.
        Use it to keep long loops' history, memory and replay time bounded.
        """
        self._runtime.recur(args, kwargs)


__all__ = ["WaitingContext", "WaitingRun"]
