"""The notebook's default :class:`~romancy_nb.App` and the shell it belongs to."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from romancy_nb.engine import App, Workflow
from romancy_nb.notebook import aio

DB_ENV = "ROMANCY_DB"
DEFAULT_DB = "romancy.db"

_app: App | None = None
_opener: Callable[[App], None] | None = None
_session_started = time.time()

log = logging.getLogger("romancy_nb")


def session_started() -> float:
    """When this process started using romancy_nb: steps recorded before were not run by
    this kernel (a resumed instance replays them from history: "cached")."""
    return _session_started


def default_db() -> str:
    """``$ROMANCY_DB`` if set, else ``romancy.db`` in the working directory (beside the
    notebook: Jupyter starts a notebook's kernel in the notebook's folder)."""
    return os.environ.get(DB_ENV) or str(Path.cwd() / DEFAULT_DB)


def new_app(db: str | Path) -> App:
    # A short sweep interval: after a kernel restart, re-running the defining cells resumes
    # the interrupted instances within about a second.
    return App(db, sweep_interval=1.0)


def current_app() -> App:
    """The notebook's default app (created on first use, bound to :func:`default_db`).

    Creating it creates its database file, so nothing creates it before it is used: after
    ``%load_ext romancy_nb`` a ``%romancy config --db PATH`` leaves no stray ``romancy.db``.
    While the extension is loaded it is opened on the shell's loop as soon as it is created
    (see :func:`open_when_created`); in a script it opens at its first ``await app.start``.
    """
    global _app
    if _app is None:
        _app = new_app(default_db())
        if _opener is not None:
            _opener(_app)
    return _app


def bound_db() -> str:
    """The database the default app uses, or will use when created (creates nothing)."""
    return _app.url if _app is not None else default_db()


def has_app() -> bool:
    """Whether the default app exists yet (it is created at first use)."""
    return _app is not None


def open_when_created(opener: Callable[[App], None] | None) -> None:
    """How :func:`current_app` opens an app it creates (the extension's; None: it does not)."""
    global _opener
    _opener = opener


def set_app(app: App | None) -> App | None:
    """Make ``app`` the default; return the previous one (the caller closes it)."""
    global _app
    previous, _app = _app, app
    return previous


def open_app(app: App) -> None:
    """Open ``app`` on the shell's loop: at once in a plain shell, scheduled in a kernel."""
    aio.run_or_schedule(app.open())


def close_app(app: App) -> Any:
    """Close ``app``: at once in a plain shell, scheduled in a kernel."""

    async def close() -> None:
        await asyncio.sleep(0)  # let an open scheduled just before run first
        if app.is_open:
            await app.close()
        else:  # never opened: only its store connection is held
            app.store.close()

    return aio.run_or_schedule(close())


def start_instance(
    wf: Workflow[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    instance_id: str | None = None,
) -> str:
    """Start an instance from synchronous code (a magic, a button) and return its id.

    The input is checked here, so a bad value raises at once; the start itself runs now in
    a plain shell and is scheduled on the kernel's loop in a kernel.
    """
    shape = wf.shape
    shape.validate_input(shape.bind(args, kwargs))
    iid = instance_id or str(uuid.uuid4())
    app = current_app()

    def started(_: Any, error: BaseException | None) -> None:
        if error is not None:
            log.error("romancy_nb: starting %s failed: %s", iid, error)

    # On the app's own loop: a Start button's click may arrive on a kernel subshell's.
    aio.run_on(app.loop, app.start(wf, *args, instance_id=iid, **kwargs), started)
    return iid
