"""Group commit: steps that finish together are made durable by one transaction.

With ``synchronous="FULL"`` every commit costs an fsync (≈ 150 µs here), far more than the
step itself. Steps of concurrently running instances that complete in the same event-loop
turn are queued and written in a single transaction at the end of that turn; each waits for
the commit before its workflow code goes on, so nothing is acknowledged before it is durable.
A lone sequential workflow gains nothing and loses one loop turn, which is why this is on by
default only in the FULL modes (``App(group_commit=...)`` decides).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from romancy_nb.store import StepRecord

if TYPE_CHECKING:
    from romancy_nb.engine.gate import StoreGate
    from romancy_nb.store import Store


class GroupCommitter:
    """Queues step records and flushes them once per event-loop turn, through the gate."""

    def __init__(
        self, store: Store, gate: StoreGate, owner: str, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._store = store
        self._gate = gate
        self._owner = owner
        self._loop = loop
        self._pending: list[tuple[StepRecord, asyncio.Future[bool]]] = []
        self._flushes: set[asyncio.Task[None]] = set()

    def record(self, step: StepRecord) -> asyncio.Future[bool]:
        """Queue ``step``; the future is True once committed, False if the lease was lost."""
        future: asyncio.Future[bool] = self._loop.create_future()
        if not self._pending:
            self._loop.call_soon(self._start_flush)
        self._pending.append((step, future))
        return future

    def _start_flush(self) -> None:
        batch, self._pending = self._pending, []
        task = self._loop.create_task(self._flush(batch))
        self._flushes.add(task)  # keep a reference until it is done
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: list[tuple[StepRecord, asyncio.Future[bool]]]) -> None:
        try:
            results = await self._gate.call(
                self._store.record_steps, [step for step, _ in batch], self._owner
            )
        except asyncio.CancelledError:  # the app is closing
            for _, future in batch:
                future.cancel()
            raise
        except BaseException as error:  # the store failed for good: every waiter sees why
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), ok in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(ok)


__all__ = ["GroupCommitter"]
