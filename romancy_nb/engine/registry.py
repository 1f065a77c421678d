"""The process-wide registry of workflow and activity definitions.

Definitions may come before or after the app (a notebook defines them in any order), and
re-defining a name replaces the old definition — that is what re-running a cell does.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from romancy_nb.errors import WorkflowNotFound

if TYPE_CHECKING:
    from romancy_nb.engine.definitions import Activity, Workflow


class Registry:
    """Workflows and activities by name; thread-safe, last definition wins."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workflows: dict[str, Workflow[Any, Any]] = {}
        self._activities: dict[str, Activity[Any, Any]] = {}
        self.generation = 0
        """Bumped at every (re)definition, so the app can retry instances after an edit."""

    def add_workflow(self, workflow: Workflow[Any, Any]) -> None:
        with self._lock:
            self._workflows[workflow.name] = workflow
            self.generation += 1

    def add_activity(self, activity: Activity[Any, Any]) -> None:
        with self._lock:
            self._activities[activity.name] = activity
            self.generation += 1

    def workflow(self, name: str) -> Workflow[Any, Any]:
        try:
            return self._workflows[name]
        except KeyError:
            known = ", ".join(sorted(self._workflows)) or "none"
            raise WorkflowNotFound(
                f"no workflow named {name!r} is defined in this process (defined: {known}). "
                "Import or run the code that defines it with @rn.workflow first.",
                name=name,
            ) from None

    def find_workflow(self, name: str) -> Workflow[Any, Any] | None:
        return self._workflows.get(name)

    def find_activity(self, name: str) -> Activity[Any, Any] | None:
        return self._activities.get(name)

    def workflows(self) -> list[Workflow[Any, Any]]:
        return list(self._workflows.values())


registry = Registry()
"""The default registry that ``@rn.workflow`` and ``@rn.activity`` add to."""
