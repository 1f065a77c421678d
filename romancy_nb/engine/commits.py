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
    from romancy_nb.store import Store


class GroupCommitter:
    """Queues step records and flushes them once per event-loop turn."""

    def __init__(self, store: Store, owner: str, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._owner = owner
        self._loop = loop
        self._pending: list[tuple[StepRecord, asyncio.Future[bool]]] = []

    def record(self, step: StepRecord) -> asyncio.Future[bool]:
        """Queue ``step``; the future is True once committed, False if the lease was lost."""
        future: asyncio.Future[bool] = self._loop.create_future()
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append((step, future))
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        try:
            results = self._store.record_steps([step for step, _ in batch], self._owner)
        except Exception as error:  # the store failed: every waiter sees why
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), ok in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(ok)
