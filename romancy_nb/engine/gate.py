"""The store gate: every store call the engine makes from the event loop goes through here.

Two promises live in this one place:

* **Infrastructure faults are never workflow failures.** A store error whose ``transient``
  flag is set (a lock held past the busy timeout, a full disk, an I/O error, a lost
  connection) is retried in place with exponential backoff until it goes away, as DBOS's
  ``db_retry`` does ("everything pauses until the connection is recovered, trading off
  availability for correctness"). Any other store error becomes :class:`StoreFault`, a
  ``BaseException`` that user code cannot swallow: the run stops without recording an
  outcome, and the instance is resumed later — it never reaches the workflow's
  ``except`` nor its compensations.
* **The event loop never waits on SQLite's lock.** The app's store connection does not
  busy-wait (``open_store(..., wait_for_locks=False)``): a write that meets another writer
  fails at once, and the gate *awaits* before trying again — woken early when a
  transactional activity of this process closes its session, the usual holder.

A store whose calls may block on the network (``Store.inline`` false) is called from a few
threads of the gate instead, so the loop stays responsive whatever the backend, and the
calls of concurrent runs are in flight together (on PostgreSQL their commits then share
the server's WAL flushes instead of waiting for one another). Such a store may make some
calls on the loop itself without blocking it (:class:`~romancy_nb.store.protocol.
CallsOnTheLoop`): PostgreSQL's per-step statement and wake-ups, whose hand-off to a thread
and back costs as much as their round trips. It returns ``ON_A_THREAD`` when it cannot,
and the call goes to a thread as any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from romancy_nb.engine.signals import StoreFault
from romancy_nb.errors import StoreError
from romancy_nb.store.protocol import ON_A_THREAD, CallsOnTheLoop

log = logging.getLogger("romancy_nb")

P = ParamSpec("P")
T = TypeVar("T")

FIRST_DELAY = 0.0005
"""Seconds before the first retry: a lock held by a local session is usually gone by then."""
MAX_DELAY = 2.0
"""Longest pause between two tries of the same call (a full disk, a database that is away)."""
_WARN_AFTER = 2.0
"""Seconds of retrying before the pause is logged as a warning (short lock waits are normal)."""


class StoreGate:
    """Calls store methods for the engine, retrying infrastructure faults without blocking."""

    def __init__(self, *, inline: bool = True, threads: int = 1) -> None:
        self._inline = inline
        self._threads = threads
        self._calls_on_the_loop: dict[type, bool] = {}
        """Per store class: is it :class:`CallsOnTheLoop` (a protocol check is slow)."""
        self._thread: ThreadPoolExecutor | None = None
        self._sessions = 0
        self._sessions_lock = threading.Lock()
        self._released: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    # local sessions: the write lock's usual holder in this process

    def session_opened(self) -> None:
        """A transactional activity began a write transaction (called from any thread)."""
        with self._sessions_lock:
            self._sessions += 1

    def session_closed(self) -> None:
        """That transaction ended: wake the engine writes that are waiting for the lock."""
        with self._sessions_lock:
            self._sessions -= 1
            waiters, self._released = self._released, []
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    async def _pause(self, delay: float) -> None:
        """Wait ``delay`` seconds, or less if a local session ends meanwhile."""
        with self._sessions_lock:
            if self._sessions == 0:
                event = None
            else:
                event = asyncio.Event()
                self._released.append((asyncio.get_running_loop(), event))
        if event is None:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):  # not wait_for: it may swallow a cancel
            async with asyncio.timeout(delay):
                await event.wait()

    async def backoff(self, faults: int) -> None:
        """Pause before redoing work a transient fault interrupted (``faults`` ≥ 1 so far):
        an attempt whose own transaction met the lock, or could not commit."""
        await self._pause(min(FIRST_DELAY * 2 ** min(faults, 30), MAX_DELAY))

    # calls

    async def call(self, method: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``method(*args)``, retried while it fails with a transient store error.

        A non-transient :class:`~romancy_nb.errors.StoreError` is raised as
        :class:`StoreFault` (the run stops, the instance is resumed later); any other
        exception (a lost lease, a channel mode conflict...) passes through unchanged.
        """
        if self._inline:  # the common case costs one call: the retry loop only on a fault
            try:
                return method(*args, **kwargs)
            except StoreError as error:
                if not error.transient:
                    raise StoreFault(error) from error
                await self._pause(FIRST_DELAY)
        return await self._retrying(not self._inline, method, *args, **kwargs)

    def _on_loop(self, method: Callable[..., Any]) -> Callable[..., Awaitable[Any]] | None:
        """The store's own way to make ``method``, one of its methods, on the event loop,
        if it has one (``store/postgres/aio.py``)."""
        store: Any = getattr(method, "__self__", None)
        kind = type(store)
        on_the_loop = self._calls_on_the_loop.get(kind)
        if on_the_loop is None:
            on_the_loop = self._calls_on_the_loop[kind] = isinstance(store, CallsOnTheLoop)
        if not on_the_loop:
            return None
        finder: Callable[[str], Callable[..., Awaitable[Any]] | None] = store.loop_call
        return finder(method.__name__)

    async def request(self, method: Callable[..., T], *args: Any, blocking: bool = False) -> T:
        """As :meth:`call` (``blocking``: :meth:`call_blocking`), for a caller with no run to
        pause — a management call: a non-transient fault is raised as the
        :class:`~romancy_nb.errors.StoreError` it is, never as the internal StoreFault."""
        call = self.call_blocking if blocking else self.call
        try:
            return await call(method, *args)
        except StoreFault as fault:
            raise fault.error from None

    async def call_blocking(self, method: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """As :meth:`call`, for a call that may wait on a lock itself (migrations at open):
        always from the gate's threads, so the loop never waits with it."""
        return await self._retrying(True, method, *args, **kwargs)

    async def _retrying(
        self, in_thread: bool, method: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        delay = FIRST_DELAY
        waited = 0.0
        warned = False
        on_loop = self._on_loop(method) if in_thread else None
        while True:
            try:
                if not in_thread:
                    return method(*args, **kwargs)
                if on_loop is not None:
                    result = await on_loop(*args, **kwargs)
                    if result is not ON_A_THREAD:
                        return result  # type: ignore[no-any-return]
                return await self._in_thread(method, *args, **kwargs)
            except StoreError as error:
                if not error.transient:
                    raise StoreFault(error) from error
                if waited >= _WARN_AFTER and not warned:
                    log.warning(
                        "the store is unavailable (%s); %s waits and retries until it is back",
                        error,
                        getattr(method, "__name__", "a store call"),
                    )
                    warned = True
                await self._pause(delay)
                waited += delay
                delay = min(delay * 2, MAX_DELAY)

    async def _in_thread(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(self._threads, thread_name_prefix="romancy-store")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: method(*args, **kwargs))

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=False, cancel_futures=True)
            self._thread = None


__all__ = ["StoreGate"]
