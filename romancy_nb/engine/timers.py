"""Durable timers: ``ctx.sleep`` / ``ctx.sleep_until``, and the app's one in-memory timer.

A sleep is a step ``sleep:N`` (or ``timer_id``). At the live frontier it computes its fire
time once and suspends the instance (``waiting_for_timer``); the fire time is stored with the
wait, and a replay that reaches the same sleep before it fired keeps the first fire time.

The app keeps a single ``loop.call_at`` for the earliest timer any waiting instance it can
run has (its own or another process's, learnt from the change watcher) — not one handle per
instance — so 100,000 sleeping instances cost no memory in the process.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any

from romancy_nb.store.protocol import WaitSpec, timer_output

if TYPE_CHECKING:
    from romancy_nb.engine.runtime import StepHost

_KIND = "sleep"


def sleep(run: StepHost, seconds: float, timer_id: str | None) -> Coroutine[Any, Any, Any]:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"ctx.sleep takes a number of seconds, not {type(seconds).__name__}")
    if math.isnan(seconds):
        raise ValueError("ctx.sleep cannot sleep NaN seconds")
    step_id = run.take_step_id(_KIND, timer_id)
    return _sleep(run, step_id, lambda now: now + seconds)


def sleep_until(run: StepHost, when: datetime, timer_id: str | None) -> Coroutine[Any, Any, Any]:
    if not isinstance(when, datetime):
        raise TypeError(f"ctx.sleep_until takes a datetime, not {type(when).__name__}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(
            f"ctx.sleep_until needs a timezone-aware datetime, got the naive {when!r}: a naive "
            "time means a different instant on every machine. Use e.g. "
            "datetime.now(UTC) + timedelta(hours=1), or when.replace(tzinfo=...)."
        )
    step_id = run.take_step_id(_KIND, timer_id)
    fire_at = when.timestamp()
    return _sleep(run, step_id, lambda now: fire_at)


async def _sleep(run: StepHost, step_id: str, deadline: Callable[[float], float]) -> None:
    if run.recorded(step_id, _KIND, _KIND, None) is not None:
        return
    run.live_wait("waiting_for_timer")
    now = time.time()
    fire_at = deadline(now)
    if fire_at <= now:  # nothing to wait for; recorded so replay agrees
        await run.record(
            run.new_step(step_id, _KIND, "completed", None, timer_output(fire_at, now))
        )
        return
    run.suspend_on(WaitSpec(step_id, _KIND, _KIND, None, None, fire_at), "waiting_for_timer")


class TimerScheduler:
    """One ``loop.call_at`` for the earliest known timer; ``fire`` runs when it is due.

    ``schedule`` only ever moves the alarm earlier; when it goes off, ``fire`` works out
    (from the store) what is due and what the next alarm is.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fire: Callable[[], None]) -> None:
        self._loop = loop
        self._fire = fire
        self._handle: asyncio.TimerHandle | None = None
        self.at = math.inf

    def schedule(self, fire_at: float) -> None:
        """Make sure ``fire`` runs at ``fire_at`` (Unix time) or earlier."""
        if fire_at >= self.at:
            return
        self.cancel()
        self.at = fire_at
        delay = max(0.0, fire_at - time.time())
        self._handle = self._loop.call_at(self._loop.time() + delay, self._run)

    def _run(self) -> None:
        self._handle = None
        self.at = math.inf
        self._fire()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.at = math.inf


__all__ = ["TimerScheduler", "sleep", "sleep_until"]
