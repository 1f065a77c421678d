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


def run_on(
    loop: asyncio.AbstractEventLoop | None,
    coro: Coroutine[Any, Any, Any],
    on_done: Callable[[Any, BaseException | None], None],
) -> tuple[bool, Any]:
    """Like :func:`run_or_schedule`, but on ``loop`` (an app's) when it runs in another
    thread. JupyterLab sends widget messages on a kernel subshell (ipykernel 7): a button's
    handler then runs in the subshell's thread and loop, not the kernel's main one the app
    was opened on. ``on_done`` is then called in ``loop``'s thread."""
    if loop is None or loop is running_loop() or not loop.is_running():
        return run_or_schedule(coro, on_done)
    future = asyncio.run_coroutine_threadsafe(coro, loop)

    def finished(future: Any) -> None:
        if future.cancelled():
            on_done(None, asyncio.CancelledError())
        elif future.exception() is not None:
            on_done(None, future.exception())
        else:
            on_done(future.result(), None)

    future.add_done_callback(finished)
    return False, future
