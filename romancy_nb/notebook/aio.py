"""Running engine coroutines from magics, whatever the kernel's loop is doing.

In a Jupyter kernel (ipykernel) the cell runs *inside* the kernel's event loop, which keeps
running between cells: the app lives on that loop, and a magic can only schedule work on it
(never ``asyncio.run``, never ``run_until_complete``). In a plain IPython shell no loop runs
between cells; top-level ``await`` runs on IPython's one persistent asyncio loop, so the app
lives on that loop and a magic drives it with ``run_until_complete``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("romancy_nb.notebook")


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The loop this code runs in, or None (a plain shell between cells, a script)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def shell_loop() -> asyncio.AbstractEventLoop:
    """The loop cells run on: the kernel's running loop, else IPython's persistent one."""
    loop = running_loop()
    if loop is not None:
        return loop
    try:
        from IPython.core.async_helpers import get_asyncio_loop

        return get_asyncio_loop()
    except ImportError:  # no IPython: a script
        return asyncio.new_event_loop()


def run_or_schedule(
    coro: Coroutine[Any, Any, Any],
    on_done: Callable[[Any, BaseException | None], None] | None = None,
) -> tuple[bool, Any]:
    """Run ``coro`` to completion if no loop is running, else schedule it on the running loop.

    Returns ``(True, result)`` when it ran, ``(False, task)`` when it was scheduled;
    ``on_done(result, error)`` is called when a scheduled coroutine ends (never for one that
    ran: its error is raised instead).
    """
    loop = running_loop()
    if loop is None:
        return True, shell_loop().run_until_complete(coro)
    task = loop.create_task(coro)

    def finished(task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            error: BaseException | None = asyncio.CancelledError()
            result = None
        else:
            error = task.exception()
            result = None if error is not None else task.result()
        if on_done is not None:
            on_done(result, error)
        elif error is not None:
            log.error("romancy_nb: background call failed: %s", error)

    task.add_done_callback(finished)
    return False, task
