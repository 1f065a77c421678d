"""``%load_ext romancy_nb``: bind the default app to the kernel and register the magics.

Loading creates no app and no file: the default app (and its ``romancy.db``) is created at
its first use — ``rn.current_app()``, a magic, a view — so ``%romancy config --db PATH``
right after ``%load_ext`` binds the app to PATH and leaves nothing behind in the folder.
Once a cell has defined a workflow the app is opened even if nothing used it yet: re-running
a notebook's defining cells after a kernel restart resumes its interrupted instances.
"""

from __future__ import annotations

from typing import Any

from romancy_nb.engine import App, registry
from romancy_nb.notebook import aio, debug, serving, state
from romancy_nb.notebook.magics import RomancyMagics

MAGICS = {"cell": ("workflow", "activity", "sql"), "line": ("romancy",)}


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics; open the default app on the shell's loop once it exists."""
    ipython.register_magics(RomancyMagics)
    debug.install_formatters(ipython)

    def open_on_shell(app: App) -> None:
        if aio.running_loop() is None and getattr(ipython, "kernel", None) is not None:
            # A kernel loading the extension at start-up (the romancy-nb kernelspec): its
            # event loop is not running yet. Open the app when the first cell runs, on it.
            _open_at_first_cell(ipython, app)
        else:
            state.open_app(app)

    state.open_when_created(open_on_shell)
    if state.has_app():  # made before the extension was loaded (a view in an earlier cell)
        app = state.current_app()
        if not app.is_open:
            open_on_shell(app)
    ipython.events.register("post_run_cell", _open_once_workflows_exist)


def _open_once_workflows_exist(*_: Any) -> None:
    """After each cell: create (and so open) the default app once a workflow is defined."""
    if not state.has_app() and registry.workflows():
        state.current_app()


def _open_at_first_cell(ipython: Any, app: App) -> None:
    def open_now(*_: Any) -> None:
        ipython.events.unregister("pre_run_cell", open_now)
        if not app.is_open:
            state.open_app(app)

    ipython.events.register("pre_run_cell", open_now)


def unload_ipython_extension(ipython: Any) -> None:
    """Close the default app (running instances resume at the next load) and drop the magics."""
    state.open_when_created(None)
    serving.stop()  # the ingress serves the app being closed
    if _open_once_workflows_exist in ipython.events.callbacks["post_run_cell"]:
        ipython.events.unregister("post_run_cell", _open_once_workflows_exist)
    previous = state.set_app(None)
    if previous is not None:
        state.close_app(previous)
    registered = ipython.magics_manager.magics
    for kind, names in MAGICS.items():
        for name in names:
            registered[kind].pop(name, None)
