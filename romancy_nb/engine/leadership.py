"""One leader per database runs the background sweeps; the others stand by.

Many workers on one database would otherwise all scan for due timers and wake-ups, apply
retention and tidy dead workers every few seconds, for the same rows. The leader holds a
lease in the store (``Store.lead``), renewed at every sweep tick; when it stops renewing —
it died, or lost the database — its lease expires and the next worker to try takes over.
A holder known to be dead (its process is gone on this host, or its heartbeat expired) is
replaced at once, without waiting for its lease to run out.

Leadership only decides who runs the safety net: every worker still claims runnable
instances and wakes the waits it is told about, so nothing stops while leadership moves.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from romancy_nb.engine import leases

if TYPE_CHECKING:
    from romancy_nb.engine.gate import StoreGate
    from romancy_nb.store import Store

log = logging.getLogger("romancy_nb")

ROLE = "sweeper"
"""The role of the background sweeps (timers, wake-ups, retention); the outbox relayer
has its own (``engine/outbox.py``), stood for only by apps that can deliver events."""


class Leadership:
    """This worker's candidacy for ``role`` (default :data:`ROLE`)."""

    def __init__(
        self, store: Store, gate: StoreGate, worker_id: str, ttl: float, *, role: str = ROLE
    ) -> None:
        self._store = store
        self._gate = gate
        self._worker_id = worker_id
        self._ttl = ttl
        self.role = role
        self.is_leader = False

    async def renew(self) -> bool:
        """Take or keep the lead; True while this worker leads."""
        now = time.time()
        store, gate = self._store, self._gate
        role = self.role
        leading = await gate.call(store.lead, role, self._worker_id, now, self._ttl)
        if not leading:
            holder = await gate.call(store.leader, role)
            if holder is not None and await self._is_dead(holder[0], now):
                await gate.call(store.resign, role, holder[0])
                leading = await gate.call(store.lead, role, self._worker_id, now, self._ttl)
        if leading != self.is_leader:
            state = "leads" if leading else "no longer leads"
            log.info("%s %s the %s role", self._worker_id, state, role)
        self.is_leader = leading
        return leading

    async def _is_dead(self, worker_id: str, now: float) -> bool:
        workers = {w.worker_id: w for w in await self._gate.call(self._store.list_workers)}
        worker = workers.get(worker_id)
        return worker is None or not leases.is_alive(worker, now, self._ttl)

    async def resign(self) -> None:
        """Step down (a clean shutdown): another worker leads at its next tick."""
        if self.is_leader:
            self.is_leader = False
            await self._gate.call(self._store.resign, self.role, self._worker_id)


__all__ = ["ROLE", "Leadership"]
