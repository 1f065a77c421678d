"""The notebook layer: magics, views and widgets over the engine.

Nothing here imports IPython until the extension is loaded (``%load_ext romancy_nb``) or a
widget is built, so ``rn.instances()`` works in a plain script too.
"""

from __future__ import annotations

from typing import Any

from romancy_nb.notebook.debug import compare
from romancy_nb.notebook.state import current_app
from romancy_nb.notebook.views import events, history, instances, messages, outbox, timers
from romancy_nb.notebook.waits import wait_until


def llm_calls(app: Any = None, prices: dict[str, tuple[float, float]] | None = None) -> Any:
    """One row per recorded model call (``rn.ai.chat``): tokens, latency, cost by ``prices``."""
    from romancy_nb.notebook.llm import llm_calls as calls

    return calls(app, prices)


def panel(workflow: Any, app: Any = None) -> Any:
    """The widget panel of a workflow (or its name): form, Start, live instances, timeline."""
    from romancy_nb.notebook.widgets import panel as make_panel

    return make_panel(workflow, app)


__all__ = [
    "compare",
    "current_app",
    "events",
    "history",
    "instances",
    "llm_calls",
    "messages",
    "outbox",
    "panel",
    "timers",
    "wait_until",
]
