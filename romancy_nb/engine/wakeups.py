"""Waking suspended instances: pushed where possible, swept as a safety net.

The app's :class:`Waker` ends waits in three ways, all through the store's one-transaction
``wake`` (record the step, take the lease), then replays the instance here:

1. *Pushed, in this process.* An in-memory alarm (``loop.call_at``) for the earliest timer;
   ``send_event`` / ``publish`` / ``ctx.publish`` wake the waiting subscribers at once.
2. *Pushed, from other processes.* A watcher thread polls SQLite's ``data_version`` every
   few milliseconds (``App(watch_interval=...)``); when another process stores a message or
   an earlier timer, the waiting subscribers are woken and the alarm is moved.
3. *Swept.* Every ``App(sweep_interval=...)`` seconds, and once at start (a timer that
   expired while no worker ran fires then), a scan finds any waiting instance that could be
   woken; it also applies message and archive retention.

Only instances whose workflow is defined in this process are woken here; others are left to
the processes that define them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from romancy_nb.engine import channels, events
from romancy_nb.engine.timers import TimerScheduler
from romancy_nb.errors import RomancyError
from romancy_nb.store.protocol import ChangeHint, MessageRecord, WaitSpec, Wakeup

if TYPE_CHECKING:
    from romancy_nb.engine.app import App

log = logging.getLogger("romancy_nb")

_BATCH = 256


class Waker:
    """Ends the waits of the instances this app can run; see the module docstring."""

    def __init__(self, app: App) -> None:
        assert app._loop is not None
        self.app = app
        self.store = app.store
        self.loop = app._loop
        self.timers = TimerScheduler(self.loop, self.fire_timers)
        self.closed = False
        self._seen = 0
        self._watch: Any = None
        self._sweeper: asyncio.Task[None] | None = None
        self._names: tuple[int, list[str]] = (-1, [])

    def names(self) -> list[str]:
        """The workflows defined here (only their instances are woken by this process)."""
        registry = self.app.registry
        if self._names[0] != registry.generation:
            self._names = (registry.generation, [wf.name for wf in registry.workflows()])
        return self._names[1]

    def start(self) -> None:
        self._seen = self.store.last_message_id()
        if self.app.watch_interval:
            self._watch = self.store.watch(self._from_thread, self.app.watch_interval)
        self._sweeper = self.loop.create_task(self._sweep_forever(), name="romancy-waits")
        next_at = self.store.next_timer_at(self.names())
        if next_at is not None:
            self.timers.schedule(next_at)

    async def stop(self) -> None:
        self.closed = True
        self.timers.cancel()
        if self._watch is not None:
            self._watch.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)

    # waking one instance

    def _wake(self, wakeup: Wakeup, now: float) -> bool:
        try:
            if not self.store.wake(wakeup.instance_id, wakeup.step_id, self.app.worker_id, now):
                return False
            wf = self.app.registry.find_workflow(wakeup.workflow_name)
            record = self.store.get_instance(wakeup.instance_id)
            if wf is None or record is None:  # redefined away meanwhile: leave it to others
                self.store.release_instance(wakeup.instance_id, self.app.worker_id)
                return False
            self.app._launch(self.app._resumed_run(wf, record))
            return True
        except RomancyError as error:  # locked database...: the sweep retries
            log.warning("could not wake %s (%s); the sweep retries", wakeup.instance_id, error)
            return False

    def _wake_all(self, wakeups: list[Wakeup]) -> int:
        now = time.time()
        return sum(self._wake(wakeup, now) for wakeup in wakeups)

    # timers

    def fire_timers(self) -> None:
        """The alarm went off: wake every due timer, then set the alarm for the next one."""
        if self.closed:
            return
        now = time.time()
        names = self.names()
        due: list[Wakeup] = []
        try:
            due = self.store.due_timers(now, names, _BATCH)
            self._wake_all(due)
            next_at = self.store.next_timer_at(names)
        except RomancyError as error:
            log.warning("timer check failed (%s); retrying shortly", error)
            next_at = now + 0.5
        if next_at is not None:
            if next_at <= now:  # more than a batch due, or one we could not take yet
                next_at = now + (0.0 if len(due) >= _BATCH else 0.05)
            self.timers.schedule(next_at)

    def waits_registered(self, waits: list[WaitSpec]) -> None:
        for wait in waits:
            if wait.fire_at is not None:
                self.timers.schedule(wait.fire_at)

    # messages

    def deliver_channel(self, channel: str) -> int:
        """Wake the instances waiting on ``channel`` that have a message there now."""
        if self.closed:
            return 0
        try:
            wakeups, _ = self.store.message_wakeups(0, self.names(), channel)
        except RomancyError as error:
            log.warning("delivery on %r failed (%s); the sweep retries", channel, error)
            return 0
        return self._wake_all(wakeups)

    def message_published(self, channel: str) -> None:
        """A workflow here published: deliver right after it yields (it keeps running)."""
        self.loop.call_soon(self.deliver_channel, channel)

    def _from_thread(self, hint: ChangeHint) -> None:
        if self.closed:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed under us
            self.loop.call_soon_threadsafe(self._on_hint, hint)

    def _on_hint(self, hint: ChangeHint) -> None:
        if self.closed:
            return
        if hint.last_message_id > self._seen:
            try:
                wakeups, newest = self.store.message_wakeups(self._seen, self.names())
            except RomancyError as error:
                log.warning("delivery of new messages failed (%s); the sweep retries", error)
            else:
                self._seen = max(self._seen, newest)
                self._wake_all(wakeups)
        if hint.next_fire_at is not None:
            self.timers.schedule(hint.next_fire_at)

    # the safety net

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("waiting sweep failed; retrying at the next tick")
            await asyncio.sleep(self.app.sweep_interval)

    def _cancel_waiting(self) -> None:
        """Cancel the waiting instances whose cancellation another process asked for.

        A cancel from a process that does not define the workflow (the CLI without
        ``--import``) is only recorded; the instance, unloaded while it waits, is claimed
        here and replayed, and its wait raises the cancellation: compensations run.
        """
        app = self.app
        for instance_id, name in self.store.cancelled_while_waiting(self.names()):
            wf = app.registry.find_workflow(name)
            if wf is None or not self.store.claim_instance(instance_id, app.worker_id, None):
                continue
            record = self.store.get_instance(instance_id)
            if record is not None:
                app._launch(app._resumed_run(wf, record))

    async def sweep(self) -> int:
        """Wake whatever can be woken now; apply retention. Returns how many woke."""
        now = time.time()
        found = await asyncio.to_thread(self.store.scan_wakeups, now, self.names(), 1000)
        if self.closed:
            return 0
        woken = self._wake_all(found)
        self._cancel_waiting()
        app = self.app
        if app.message_retention is not None:
            self.store.delete_messages(now - app.message_retention)
        if app.archive_retention is not None:
            self.store.delete_archives(now - app.archive_retention)
        return woken


class WaitingApp:
    """Mixin of ``App``: sending events and messages, groups, and the waker's lifecycle."""

    _waker: Waker | None = None
    watch_interval: float | None = 0.002
    message_retention: float | None = 7 * 86400.0
    archive_retention: float | None = None

    if TYPE_CHECKING:  # provided by App
        store: Any

        def _ensure_schema(self) -> None: ...

    def _start_waiting(self) -> None:
        self._waker = Waker(self)  # type: ignore[arg-type]
        self._waker.start()

    async def _stop_waiting(self) -> None:
        waker, self._waker = self._waker, None
        if waker is not None:
            await waker.stop()

    def _waits_registered(self, waits: list[WaitSpec]) -> None:
        if self._waker is not None:
            self._waker.waits_registered(waits)

    def _message_published(self, channel: str) -> None:
        if self._waker is not None:
            self._waker.message_published(channel)

    def _post(self, message: MessageRecord) -> str:
        self._ensure_schema()
        self.store.publish(message)
        if self._waker is not None:  # wake the waiting subscribers here and now
            self._waker.deliver_channel(message.channel)
        return message.message_id

    async def fire_timer(self, instance_id: str, step_id: str | None = None) -> bool:
        """Fire the instance's pending timer now, as if it were due ("fire now" in a panel).

        A sleep returns at once (its step records the deadline as the firing time); a wait
        with a timeout times out. ``step_id`` picks one timer, else the earliest. False if
        the instance has no pending timer here (it woke already, or waits without one).
        """
        await self._ensure_open()  # type: ignore[attr-defined]
        timers = self.store.pending_timers(instance_id)
        if step_id is not None:
            timers = [timer for timer in timers if timer[0] == step_id]
        record = self.store.get_instance(instance_id)
        if not timers or record is None or self._waker is None:
            return False
        chosen, fire_at = timers[0]
        wakeup = Wakeup(instance_id, record.workflow_name, chosen)
        return self._waker._wake(wakeup, max(time.time(), fire_at))

    async def send_event(
        self,
        event_type: str,
        data: Any = None,
        *,
        source: str = "romancy_nb",
        id: str | None = None,
        time: datetime | None = None,
        subject: str | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> str:
        """Send an event; instances subscribed to ``event_type`` receive it. Returns its id.

        Waiting instances defined in this process resume at once; other processes on the
        same database notice within milliseconds. See :mod:`romancy_nb.engine.events` for
        which instances receive it. Bad input (an unserializable ``data``, a naive
        ``time``) raises and stores nothing; a repeated ``id`` is stored once.
        """
        return self._post(
            events.event_message(
                event_type,
                data,
                source=source,
                id=id,
                time=time,
                subject=subject,
                extensions=extensions,
            )
        )

    async def publish(
        self, channel: str, data: Any, *, metadata: dict[str, Any] | None = None
    ) -> str:
        """Publish a message on ``channel`` from outside any workflow; returns its id."""
        channels.check_name("the channel", channel)
        return self._post(
            channels.new_message(
                channel,
                channels.encode_data(data, f"the data published on channel {channel!r}"),
                channels.encode_metadata(metadata),
            )
        )

    async def send_to(
        self,
        instance_id: str,
        channel: str,
        data: Any,
        *,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Send a message to one instance (its ``direct`` subscription on ``channel``)."""
        channels.check_name("the instance id", instance_id)
        channels.check_name("the channel", channel)
        return self._post(
            channels.new_message(
                channel,
                channels.encode_data(data, f"the data sent on channel {channel!r}"),
                channels.encode_metadata(metadata),
                target=instance_id,
            )
        )

    def get_group_members(self, group: str) -> list[str]:
        """The ids of the instances that are members of ``group``, oldest member first."""
        self._ensure_schema()
        return self.store.group_members(group)


__all__ = ["WaitingApp", "Waker"]
