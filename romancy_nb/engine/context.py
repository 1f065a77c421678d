"""The contexts user code receives: thin fronts over the engine's runtime.

``WorkflowContext`` holds no store or Jupyter types; every method is a one-line call into
the :class:`~romancy_nb.engine.runtime.WorkflowRuntime` that executes the workflow (the run
of ``romancy_nb.engine.runner``), as temporal's workflow API calls into its ``_Runtime``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

from romancy_nb.engine import outbox
from romancy_nb.errors import RomancyError

if TYPE_CHECKING:
    from romancy_nb.engine.channels import ChannelMessage
    from romancy_nb.engine.definitions import Activity
    from romancy_nb.engine.events import ReceivedEvent
    from romancy_nb.engine.runtime import WorkflowRuntime
    from romancy_nb.engine.sessions import AttemptSession


class WorkflowContext:
    """What a workflow function receives as ``ctx``."""

    __slots__ = ("_runtime",)

    def __init__(self, runtime: WorkflowRuntime) -> None:
        self._runtime = runtime

    @property
    def instance_id(self) -> str:
        """The id of the running instance (stable across replays and recurs)."""
        return self._runtime.instance_id

    @property
    def workflow_name(self) -> str:
        return self._runtime.workflow_name

    @property
    def is_replaying(self) -> bool:
        """True while the code re-runs steps already recorded in history.

        Use it to skip side effects in workflow code (printing, logging) during replay.
        """
        return self._runtime.is_replaying

    def now(self) -> datetime:
        """The current UTC time, recorded: replay returns the same instant."""
        return self._runtime.deterministic("now")  # type: ignore[no-any-return]

    def uuid(self) -> uuid.UUID:
        """A random UUID, recorded: replay returns the same one."""
        return self._runtime.deterministic("uuid")  # type: ignore[no-any-return]

    def random(self) -> float:
        """A random float in [0, 1), recorded: replay returns the same number."""
        return self._runtime.deterministic("random")  # type: ignore[no-any-return]

    # waiting: timers, events, channels, groups, recur

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

    def __repr__(self) -> str:
        return f"<WorkflowContext {self.workflow_name} {self.instance_id}>"


class ActivityContext:
    """What an activity function receives as ``ctx``.

    ``session`` opens the activity's database transaction lazily, at first use, so an
    activity that never touches the database never holds SQLite's single writer lock.
    """

    __slots__ = ("_activity", "_attempt", "_instance_id", "_workflow_name", "attempt", "step_id")

    def __init__(
        self,
        activity: Activity[Any, Any],
        attempt_session: AttemptSession,
        instance_id: str,
        workflow_name: str,
        step_id: str,
        attempt: int,
    ) -> None:
        self._activity = activity
        self._attempt = attempt_session
        self._instance_id = instance_id
        self._workflow_name = workflow_name
        self.step_id = step_id
        self.attempt = attempt

    @property
    def instance_id(self) -> str:
        return self._instance_id

    @property
    def workflow_name(self) -> str:
        return self._workflow_name

    @property
    def activity_name(self) -> str:
        return self._activity.name

    @property
    def is_replaying(self) -> bool:
        """Always False: an activity body only runs when its step is not recorded yet."""
        return False

    @property
    def session(self) -> Any:
        """The database connection inside this activity's transaction (APSW for SQLite).

        Rows written here commit together with the step's history record, or not at all.
        """
        if not self._activity.transactional:
            raise RomancyError(
                f"activity {self._activity.name!r} is declared transactional=False, so it "
                "has no ctx.session; remove transactional=False to write in its transaction."
            )
        return self._attempt.connection()

    def send_event(
        self,
        event_type: str,
        data: Any = None,
        *,
        source: str | None = None,
        id: str | None = None,
        time: datetime | None = None,
        subject: str | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> str:
        """Publish a CloudEvent through the transactional outbox; returns its id.

        The event is written in this step's transaction: it exists once the step completes
        and never if this attempt fails, times out or rolls back (a retry sends its own),
        and a replay does not send it again. The app's relayer then posts it to
        ``App(broker_url=...)``, at least once and in order per instance
        (:mod:`romancy_nb.engine.outbox`). ``source`` defaults to
        ``"romancy_nb/<workflow>"``; ``extensions`` are CloudEvents extension attributes
        (``romancy_nb.telemetry.trace_extensions()`` carries the trace). Bad input raises
        here and sends nothing; an ``id`` sent before is sent once.
        """
        event = outbox.outbox_event(
            self._instance_id, self.step_id, event_type, data,
            source=f"romancy_nb/{self._workflow_name}" if source is None else source,
            id=id, time=time, subject=subject, extensions=extensions,
        )  # fmt: skip
        self._attempt.events.append(event)
        return event.event_id

    def __repr__(self) -> str:
        return f"<ActivityContext {self.activity_name} {self.step_id} attempt {self.attempt}>"
