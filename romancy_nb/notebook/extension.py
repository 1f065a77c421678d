"""``%load_ext romancy_nb``: bind the default app to the kernel and register the magics."""

from __future__ import annotations

from typing import Any

from romancy_nb.notebook import aio, state
from romancy_nb.notebook.magics import RomancyMagics

MAGICS = {"cell": ("workflow", "activity", "sql"), "line": ("romancy",)}


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics, open the default app on the shell's loop, expose ``rn``."""
    ipython.register_magics(RomancyMagics)
    if aio.running_loop() is None and getattr(ipython, "kernel", None) is not None:
        # A kernel loading the extension at start-up (the romancy-nb kernelspec): its event
        # loop is not running yet. Open the app when the first cell runs, on that loop.
        _open_at_first_cell(ipython)
    else:
        state.open_app(state.current_app())


def _open_at_first_cell(ipython: Any) -> None:
    def open_now(*_: Any) -> None:
        ipython.events.unregister("pre_run_cell", open_now)
        app = state.current_app()
        if not app.is_open:
            state.open_app(app)

    ipython.events.register("pre_run_cell", open_now)


def unload_ipython_extension(ipython: Any) -> None:
    """Close the default app (running instances resume at the next load) and drop the magics."""
    previous = state.set_app(None)
    if previous is not None:
        state.close_app(previous)
    registered = ipython.magics_manager.magics
    for kind, names in MAGICS.items():
        for name in names:
            registered[kind].pop(name, None)
