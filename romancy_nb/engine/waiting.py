"""Durable waiting, the run's side: how a workflow waits without holding a coroutine.

A wait that history answers returns at once (replay). A wait at the live frontier first
tries to end at once (a message is already there, the sleep is already over); otherwise it
registers a :class:`~romancy_nb.store.protocol.WaitSpec` here and raises
:class:`~romancy_nb.engine.signals.SuspendSignal`. The runner then hands the signal to
:meth:`Suspension.suspended`, which asks the store, in one transaction, to register the
waits, set the status and release the lease. The run ends: no coroutine, no memory. Whoever
ends the wait later (an in-memory timer, a publisher, another process's watcher, a sweep)
records the wait's step and takes the lease in one transaction, then replays the instance,
which finds the step in history and goes on.

Timers, events, channels and groups live in their own modules and reach the run only
through :class:`~romancy_nb.engine.runtime.StepHost`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, NoReturn

from romancy_nb.engine.outcome import Outcome
from romancy_nb.engine.signals import CancelSignal, RecurSignal, SuspendSignal

if TYPE_CHECKING:
    from romancy_nb.engine.runtime import RunHost
    from romancy_nb.store.protocol import WaitSpec


class Suspension:
    """The waits a run registered before it suspends, and what suspending does.

    ``cancel_reason`` is set when a cancel arrives while the run is live (the next live
    wait raises it); ``replay_only`` runs stop at a live wait instead of suspending.
    """

    def __init__(self, host: RunHost, instance_id: str, owner: str) -> None:
        self._host = host
        self._instance_id = instance_id
        self._owner = owner
        self._waits: list[WaitSpec] = []
        self.cancel_reason: str | None = None
        self.replay_only = False

    def check_cancel(self) -> None:
        """A cancelled instance stops at its next live wait (and takes no message)."""
        if self.cancel_reason is not None:
            raise CancelSignal(self.cancel_reason)

    def live_wait(self, status: str) -> None:
        """At the live frontier of a wait: a replay-only run (``app.replay``) stops here."""
        if self.replay_only:
            raise SuspendSignal(status)  # reported as "the workflow would wait (status)"
        self.check_cancel()

    def suspend_on(self, wait: WaitSpec, status: str) -> NoReturn:
        self.check_cancel()
        self._waits.append(wait)
        raise SuspendSignal(status)

    async def suspended(self, signal: SuspendSignal, seq: int, input_json: str) -> Outcome:
        """The workflow raised a suspension: register its waits (or recur); end the run."""
        host, store, iid, owner = self._host, self._host.store, self._instance_id, self._owner
        gate = host.gate
        if isinstance(signal, RecurSignal):
            self._waits = []
            await gate.call(store.recur, iid, owner, signal.input_json, time.time())
            await host.relaunch(iid, signal.input_json, signal.values, fresh=True)
            return Outcome("recurred")
        waits, self._waits = self._waits, []
        if not waits:  # a bare SuspendSignal: keep the status, release the lease
            await gate.call(store.set_status, iid, owner, signal.status)
            await gate.call(store.release_instance, iid, owner)
            return Outcome("suspended", signal.status)
        answered = await gate.call(
            store.suspend, iid, owner, signal.status, waits, seq, time.time()
        )
        if answered is not None:  # ended while we were suspending: replay now, lease kept
            await host.relaunch(iid, input_json, None, fresh=False)
        else:
            host.waits_registered(waits)
        return Outcome("suspended", signal.status)


__all__ = ["Suspension"]
