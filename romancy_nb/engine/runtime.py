"""The declared seams inside the engine, as Protocols (temporal's ``_Runtime`` pattern).

* :class:`WorkflowRuntime` — what ``WorkflowContext`` calls: every public context method is
  a one-line call into it. ``romancy_nb.engine.runner.WorkflowRun`` implements it.
* :class:`StepHost` — what the waiting primitives (timers, events, channels, groups) need
  from the run they belong to: step ids, history answers, durable writes, suspension.
* :class:`RunHost` — what a run needs from the process that runs it: the store and its
  gate, the definitions, the thread pool, and where to report or relaunch.
  ``romancy_nb.engine.instances.Instances`` implements it.

Keeping these small and explicit is what lets each piece be read (and replaced, as the
replayer does with a read-only host) without reaching into another's private members.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

if TYPE_CHECKING:
    from romancy_nb.engine.channels import ChannelMessage
    from romancy_nb.engine.commits import GroupCommitter
    from romancy_nb.engine.definitions import Activity
    from romancy_nb.engine.events import ReceivedEvent
    from romancy_nb.engine.gate import StoreGate
    from romancy_nb.engine.hooks import HookSet
    from romancy_nb.engine.registry import Registry
    from romancy_nb.engine.retry import RetryPolicy
    from romancy_nb.store import StepRecord, Store
    from romancy_nb.store.protocol import WaitSpec

T = TypeVar("T")


class WorkflowRuntime(Protocol):
    """The engine side of ``WorkflowContext``."""

    @property
    def instance_id(self) -> str: ...

    @property
    def workflow_name(self) -> str: ...

    @property
    def is_replaying(self) -> bool: ...

    def deterministic(self, kind: str) -> Any: ...

    def call_activity(
        self,
        activity: Activity[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        activity_id: str | None,
    ) -> Awaitable[Any]: ...

    def sleep(self, seconds: float, timer_id: str | None) -> Awaitable[None]: ...

    def sleep_until(self, when: datetime, timer_id: str | None) -> Awaitable[None]: ...

    def wait_event(
        self, event_type: str, timeout: float | None, model: Any, wait_id: str | None
    ) -> Awaitable[ReceivedEvent]: ...

    def subscribe(self, channel: str, mode: str) -> Awaitable[None]: ...

    def unsubscribe(self, channel: str) -> Awaitable[None]: ...

    def receive(
        self, channel: str, timeout: float | None, model: Any, receive_id: str | None
    ) -> Awaitable[ChannelMessage]: ...

    def publish(
        self, channel: str, data: Any, metadata: dict[str, Any] | None
    ) -> Awaitable[str]: ...

    def send_to(
        self, instance_id: str, channel: str, data: Any, metadata: dict[str, Any] | None
    ) -> Awaitable[str]: ...

    def join_group(self, group: str) -> Awaitable[None]: ...

    def leave_group(self, group: str) -> Awaitable[None]: ...

    def recur(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> NoReturn: ...


class StepHost(Protocol):
    """The run as the waiting primitives see it."""

    @property
    def instance_id(self) -> str: ...

    @property
    def owner(self) -> str: ...

    @property
    def store(self) -> Store: ...

    def take_step_id(self, name: str, explicit: str | None) -> str:
        """The id of the next step named ``name``, taken when the call is made."""

    def recorded(
        self, step_id: str, kind: str, name: str, input_json: str | None
    ) -> StepRecord | None:
        """The step as history holds it (determinism-checked), or None at the frontier."""

    def next_seq(self) -> int: ...

    def new_step(
        self, step_id: str, kind: str, status: str, input_json: str | None, output: str | None
    ) -> StepRecord:
        """A wait-like step record stamped now, with the next sequence number."""

    async def write(self, method: Callable[..., T], *args: Any) -> T:
        """A lease-checked store write through the gate (a lost lease stops the run)."""

    async def record(self, step: StepRecord) -> None:
        """Record ``step`` in history (a lost lease stops the run)."""

    async def fail(
        self, step_id: str, kind: str, input_json: str | None, error: Exception
    ) -> NoReturn:
        """Record a wait-like step as failed (replay raises the same error), then raise."""

    def live_wait(self, status: str) -> None:
        """At the live frontier of a wait: stop a replay-only run, honour a cancel."""

    def suspend_on(self, wait: WaitSpec, status: str) -> NoReturn:
        """Register ``wait`` and unload the instance until it ends."""

    def message_published(self, channel: str) -> None:
        """A message was stored on ``channel``: wake its waiting subscribers here."""


class RunHost(Protocol):
    """What a run needs from the process that runs it."""

    @property
    def store(self) -> Store: ...

    @property
    def gate(self) -> StoreGate: ...

    @property
    def registry(self) -> Registry: ...

    @property
    def worker_id(self) -> str: ...

    @property
    def default_retry(self) -> RetryPolicy | None: ...

    @property
    def executor(self) -> Executor | None: ...

    @property
    def committer(self) -> GroupCommitter | None: ...

    @property
    def hooks(self) -> HookSet | None:
        """The ``App(hooks=...)`` to report to; None (the hot path's only cost) without."""

    @property
    def on_divergence(self) -> str:
        """The app's policy for a run whose code no longer matches its history
        (``"error"`` or ``"rewind"``); a workflow's own policy overrides it."""

    def notify(self, instance_id: str, step: StepRecord | None = None) -> None:
        """Tell the listeners (live views) that a step was recorded or a run changed."""

    def relaunch(
        self, instance_id: str, input_json: str, values: tuple[Any, ...] | None, *, fresh: bool
    ) -> Awaitable[None]:
        """Run the instance again here, now (after a wait answered at once, or a recur)."""

    def waits_registered(self, waits: list[WaitSpec]) -> None: ...

    def message_published(self, channel: str) -> None: ...

    def outbox_written(self) -> None:
        """A step wrote outbox events (``ctx.send_event``): the relayer here looks now."""


__all__ = ["RunHost", "StepHost", "WorkflowRuntime"]
