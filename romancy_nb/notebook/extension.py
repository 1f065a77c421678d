"""``%load_ext romancy_nb``: bind the default app to the kernel and register the magics."""

from __future__ import annotations

from typing import Any

from romancy_nb.notebook import state
from romancy_nb.notebook.magics import RomancyMagics

MAGICS = {"cell": ("workflow", "activity", "sql"), "line": ("romancy",)}


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics, open the default app on the shell's loop, expose ``rn``."""
    ipython.register_magics(RomancyMagics)
    state.open_app(state.current_app())


def unload_ipython_extension(ipython: Any) -> None:
    """Close the default app (running instances resume at the next load) and drop the magics."""
    previous = state.set_app(None)
    if previous is not None:
        state.close_app(previous)
    registered = ipython.magics_manager.magics
    for kind, names in MAGICS.items():
        for name in names:
            registered[kind].pop(name, None)
