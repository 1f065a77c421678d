"""Helpers for testing code that uses romancy_nb (and for romancy_nb's own tests).

Poll for a condition instead of sleeping a fixed time: a fixed sleep is either too short on
a slow CI machine or wastes time on a fast one.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 30.0,
    interval: float = 0.01,
    message: str = "condition",
) -> T:
    """Call ``probe`` until it returns a truthy value; return it, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not reached within {timeout} s (last: {last!r})")
        await asyncio.sleep(interval)


def wait_until(
    probe: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.01, message: str = ""
) -> T:
    """The blocking twin of :func:`eventually`, for tests without an event loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message or 'condition'} not reached within {timeout} s")
        time.sleep(interval)
