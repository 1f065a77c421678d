"""``%romancy serve``: the CloudEvents ingress (``app.asgi()``) inside the kernel.

uvicorn's ``Server.serve()`` runs as a task on the kernel's own event loop, beside the
app it serves, so an event posted from outside reaches the notebook's waiting instances
without a thread and without blocking a cell. Two things differ from ``romancy-nb serve``:

- uvicorn must not take the kernel's signals: it would turn the SIGINT of "interrupt the
  kernel" into a shutdown of the server (and raise it again afterwards), so the server
  here captures none;
- the socket is bound by the magic itself, so a port in use is an error in the cell that
  asked for it (uvicorn would ``sys.exit`` inside the task), and ``--port 0`` picks a free
  port whose number is known at once.

The ASGI lifespan is off: the notebook owns its app (the extension opened it, and closes
it at unload); the server only opens it if it is not yet open, and never closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from romancy_nb.engine import App


@dataclass
class Serving:
    """The ingress running in this kernel: where, for which app, and its task."""

    url: str
    app: App
    server: Any  # uvicorn.Server (imported only when serving: the http extra)
    task: asyncio.Task[None]


_serving: Serving | None = None

log = logging.getLogger("romancy_nb.notebook")


def current() -> Serving | None:
    """The ingress this kernel runs, or None (also once its task has ended)."""
    global _serving
    if _serving is not None and _serving.task.done():
        _serving = None
    return _serving


def start(app: App, host: str, port: int, token: str | None, max_body: int) -> Serving:
    """Bind ``host:port`` and serve ``app.asgi()`` on the running loop; return at once."""
    global _serving
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise ValueError(
            "%romancy serve needs a Jupyter kernel, whose event loop runs between cells; "
            "in a plain IPython shell or a script, run `romancy-nb serve` or serve "
            "app.asgi() with uvicorn"
        ) from None
    try:
        import uvicorn
    except ImportError:
        raise ValueError(
            "%romancy serve needs the http extra: pip install 'romancy-nb[http]'"
        ) from None

    class KernelServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # the kernel's SIGINT interrupts cells, it does not stop the server

    ingress = app.asgi(token=token, max_body=max_body)
    config = uvicorn.Config(
        ingress, lifespan="off", log_config=None, access_log=False, log_level="warning"
    )
    try:
        sock = socket.create_server((host, port))
    except OSError as error:
        raise ValueError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    bound = sock.getsockname()[1]
    server = KernelServer(config)

    async def serve() -> None:
        await app.open()  # opened by the extension already, or being opened: waits for it
        await server.serve(sockets=[sock])

    task = loop.create_task(serve(), name=f"romancy-nb ingress :{bound}")
    task.add_done_callback(_report)
    shown = f"[{host}]" if ":" in host else host
    _serving = Serving(f"http://{shown}:{bound}", app, server, task)
    return _serving


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("romancy_nb: the ingress stopped: %s", task.exception())


def stop() -> asyncio.Task[None] | None:
    """Ask the ingress to stop (requests in flight finish); its task, or None if none ran."""
    global _serving
    serving, _serving = current(), None
    if serving is None:
        return None
    serving.server.should_exit = True
    return serving.task
