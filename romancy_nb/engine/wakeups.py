"""Waking suspended instances: pushed where possible, swept as a safety net.

The app's :class:`Waker` ends waits in three ways, all through the store's one-transaction
``wake`` (record the step, take the lease, through the store gate), then replays the
instance here:

1. *Pushed, in this process.* An in-memory alarm (``loop.call_at``) for the earliest timer;
   ``send_event`` / ``publish`` / ``ctx.publish`` wake the waiting subscribers at once.
2. *Pushed, from other processes.* A watcher thread polls SQLite's ``data_version`` every
   few milliseconds (``App(watch_interval=...)``); when another process stores a message or
   an earlier timer, the waiting subscribers are woken and the alarm is moved.
3. *Swept.* Every ``App(sweep_interval=...)`` seconds on the leader (one worker per
   database, :mod:`romancy_nb.engine.leadership`), and once at start in every worker (a
   timer that expired while no worker ran fires then), a scan finds any waiting instance
   that could be woken; it also applies message and archive retention.

A change hint may also say that instances became runnable (started for any worker,
released) or that a cancellation was asked for: the app claims or cancels them at once.

Only instances whose workflow is defined in this process are woken here; others are left to
the processes that define them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from romancy_nb.engine import logs
from romancy_nb.engine.signals import StoreFault
from romancy_nb.engine.timers import TimerScheduler
from romancy_nb.errors import RomancyError
from romancy_nb.store.protocol import ChangeHint, WaitSpec, Wakeup

if TYPE_CHECKING:
    from romancy_nb.engine.instances import Instances
    from romancy_nb.engine.leadership import Leadership

log = logging.getLogger("romancy_nb")

_BATCH = 256


@dataclass(frozen=True)
class WakeSettings:
    """The app's settings the waker follows (see ``App``)."""

    watch_interval: float | None
    sweep_interval: float
    message_retention: float | None
    archive_retention: float | None


class Waker:
    """Ends the waits of the instances this app can run; see the module docstring."""

    def __init__(
        self,
        instances: Instances,
        settings: WakeSettings,
        loop: asyncio.AbstractEventLoop,
        leadership: Leadership,
    ) -> None:
        self.instances = instances
        self.leadership = leadership
        self.store = instances.store
        self.gate = instances.gate
        self.settings = settings
        self.loop = loop
        self.timers = TimerScheduler(self.loop, self._alarm)
        self.closed = False
        self._seen = 0
        self._watch: Any = None
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._firing = False
        self._again = False
        self._names: tuple[int, list[str]] = (-1, [])
        self._behind_after: int | None = None
        """Messages after this id may still end waits this worker left for lack of room
        (at its ``max_concurrent``); looked at again when a run ends (:meth:`room_freed`)."""
        self._behind_channels: set[str] = set()
        """Channels published on here whose waiters were left for lack of room."""

    def names(self) -> list[str]:
        """The workflows defined here (only their instances are woken by this process)."""
        registry = self.instances.registry
        if self._names[0] != registry.generation:
            self._names = (registry.generation, [wf.name for wf in registry.workflows()])
        return self._names[1]

    async def start(self) -> None:
        self._seen = await self.gate.call(self.store.last_message_id)
        if self.settings.watch_interval:
            self._watch = self.store.watch(self._from_thread, self.settings.watch_interval)
        self._sweeper = self.loop.create_task(self._sweep_forever(), name="romancy-waits")
        next_at = await self.gate.call(self.store.next_timer_at, self.names())
        if next_at is not None:
            self.timers.schedule(next_at)

    async def stop(self) -> None:
        self.closed = True
        self.timers.cancel()
        if self._watch is not None:
            self._watch.stop()
        tasks = [*self._tasks, *([self._sweeper] if self._sweeper is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` on the loop, kept referenced until done; failures are logged."""
        if self.closed:
            work.close()
            return
        task = self.loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a wake-up failed (%s); the sweep retries", task.exception())

    # waking one instance

    async def wake(self, wakeup: Wakeup, now: float) -> bool:
        """End one wait and replay the instance here; False if it could not end now (or
        this worker is at its ``max_concurrent``: another worker, or a later look, wakes it)."""
        instances = self.instances
        iid = wakeup.instance_id
        if instances.capacity() < 1:
            return False
        with instances.claiming(iid) as free:
            if not free:
                return False
            try:
                # one call: the wait ends, and what the replay needs is read back
                woken = await self.gate.call(
                    self.store.wake, iid, wakeup.step_id, instances.worker_id, now
                )
                if woken is None:
                    return False
                # From here this worker holds the lease: if the store fails before the run
                # is launched, recovery finds the instance leased here with no run.
                wf = instances.registry.find_workflow(wakeup.workflow_name)
                if wf is None:  # redefined away meanwhile: leave it to others
                    await self.gate.call(self.store.release_instance, iid, instances.worker_id)
                    return False
                instances.launch(instances.woken_run(wf, woken))
                return True
            except (RomancyError, StoreFault) as error:
                log.warning(
                    "could not wake %s (%s); the sweep retries", iid, error,
                    extra=logs.fields(iid, wakeup.workflow_name, wakeup.step_id),
                )  # fmt: skip
                return False

    async def _wake_all(self, wakeups: list[Wakeup]) -> int:
        now = time.time()
        woken = 0
        for wakeup in wakeups:
            woken += await self.wake(wakeup, now)
        return woken

    def _full(self) -> bool:
        """At ``max_concurrent`` with work waiting for room: worth looking again when a run
        ends. (A client, ``max_concurrent=0``, or a draining worker never has room.)"""
        instances = self.instances
        return bool(instances.max_concurrent) and instances.capacity() < 1

    def room_freed(self) -> None:
        """Room was freed here (a run ended; recovery released the room it had reserved):
        end the waits left for lack of room meanwhile, without waiting for the sweep."""
        if self.closed or self.instances.capacity() < 1:
            return
        if self._behind_after is not None:
            self._spawn(self._deliver_new())
        channels, self._behind_channels = self._behind_channels, set()
        for channel in channels:
            self._spawn(self.deliver_channel(channel))

    # timers

    def _alarm(self) -> None:
        if self._firing:  # the running check looks again when it is done
            self._again = True
        else:
            self._spawn(self.fire_timers())

    async def fire_timers(self) -> None:
        """The alarm went off: wake every due timer, then set the alarm for the next one."""
        self._firing = True
        try:
            self._again = True
            while self._again and not self.closed:
                self._again = False
                await self._fire_due()
        finally:
            self._firing = False

    async def _fire_due(self) -> None:
        now = time.time()
        names = self.names()
        due: list[Wakeup] = []
        try:
            due = await self.gate.call(self.store.due_timers, now, names, _BATCH)
            await self._wake_all(due)
            next_at = await self.gate.call(self.store.next_timer_at, names)
        except (RomancyError, StoreFault) as error:
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

    async def deliver_channel(self, channel: str) -> int:
        """Wake the instances waiting on ``channel`` that have a message there now."""
        if self.closed or self.instances.capacity() < 1:
            if self._full():
                self._behind_channels.add(channel)
            return 0  # nothing could be woken here (a client: max_concurrent=0; or full)
        try:
            wakeups, _ = await self.gate.call(self.store.message_wakeups, 0, self.names(), channel)
        except (RomancyError, StoreFault) as error:
            log.warning("delivery on %r failed (%s); the sweep retries", channel, error)
            return 0
        woken = await self._wake_all(wakeups)
        if woken < len(wakeups) and self._full():
            self._behind_channels.add(channel)
        return woken

    def message_published(self, channel: str) -> None:
        """A workflow here published: deliver right after it yields (it keeps running)."""
        self._spawn(self.deliver_channel(channel))

    def _from_thread(self, hint: ChangeHint) -> None:
        if self.closed:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed under us
            self.loop.call_soon_threadsafe(self._on_hint, hint)

    def _on_hint(self, hint: ChangeHint) -> None:
        if self.closed:
            return
        if hint.runnable:
            self.instances.want_claims()
        if hint.cancels:
            self._spawn(self._cancels_asked())
        if hint.last_message_id > self._seen:
            self._spawn(self._deliver_new())
        if hint.next_fire_at is not None:
            self.timers.schedule(hint.next_fire_at)

    async def _deliver_new(self) -> None:
        after = self._seen if self._behind_after is None else min(self._seen, self._behind_after)
        if self.instances.capacity() < 1:
            # Nothing could be woken here: no need to look now; a run ending here looks
            # again (``room_freed``), or a later look, with room, covers these messages.
            if self._full():
                self._left_behind(after)
            return
        self._behind_after = None
        try:
            wakeups, newest = await self.gate.call(self.store.message_wakeups, after, self.names())
        except (RomancyError, StoreFault) as error:
            log.warning("delivery of new messages failed (%s); the sweep retries", error)
            return
        self._seen = max(self._seen, newest)
        if await self._wake_all(wakeups) < len(wakeups) and self._full():
            self._left_behind(after)

    def _left_behind(self, after: int) -> None:
        behind = self._behind_after
        self._behind_after = after if behind is None else min(after, behind)

    # the safety net

    async def _sweep_forever(self) -> None:
        first = True  # at start every worker catches up on its own workflows' waits
        while True:
            if first or self.leadership.is_leader:
                try:
                    await self.sweep()
                except (Exception, StoreFault):
                    log.exception("waiting sweep failed; retrying at the next tick")
            first = False
            await asyncio.sleep(self.settings.sweep_interval)

    async def _cancels_asked(self) -> None:
        """Another process asked to cancel: cancel what runs or waits here."""
        try:
            await self.instances.honour_cancels()
            await self._cancel_waiting()
        except (RomancyError, StoreFault) as error:
            log.warning("honouring a cancellation failed (%s); the sweep retries", error)

    async def _cancel_waiting(self) -> None:
        """Cancel the waiting instances whose cancellation another process asked for.

        A cancel from a process that does not define the workflow (the CLI without
        ``--import``) is only recorded; the instance, unloaded while it waits, is claimed
        here and replayed, and its wait raises the cancellation: compensations run.
        """
        instances = self.instances
        found = await self.gate.call(self.store.cancelled_while_waiting, self.names())
        for instance_id, name in found:
            wf = instances.registry.find_workflow(name)
            if wf is None:
                continue
            with instances.claiming(instance_id) as free:
                if not free or not await self.gate.call(
                    self.store.claim_instance, instance_id, instances.worker_id, None
                ):
                    continue
                record = await self.gate.call(self.store.get_instance, instance_id)
                if record is not None:
                    instances.launch(await instances.resumed_run(wf, record))

    async def sweep(self) -> int:
        """Wake whatever can be woken now; apply retention. Returns how many woke."""
        now = time.time()
        found = await asyncio.to_thread(self.store.scan_wakeups, now, self.names(), 1000)
        if self.closed:
            return 0
        woken = await self._wake_all(found)
        await self._cancel_waiting()
        settings = self.settings
        if settings.message_retention is not None:
            await self.gate.call(self.store.delete_messages, now - settings.message_retention)
        if settings.archive_retention is not None:
            await self.gate.call(self.store.delete_archives, now - settings.archive_retention)
        return woken


__all__ = ["WakeSettings", "Waker"]
