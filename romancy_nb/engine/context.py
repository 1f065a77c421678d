"""The contexts user code receives: thin fronts over the engine's runtime.

``WorkflowContext`` holds no store or Jupyter types; every method is a one-line call into
the run that executes the workflow (``romancy_nb.engine.runner``), as temporal's workflow
API calls into its ``_Runtime``.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from romancy_nb.engine.waiting import WaitingContext
from romancy_nb.errors import RomancyError

if TYPE_CHECKING:
    from romancy_nb.engine.definitions import Activity
    from romancy_nb.engine.runner import WorkflowRun
    from romancy_nb.store import Session


class WorkflowContext(WaitingContext):
    """What a workflow function receives as ``ctx``."""

    __slots__ = ("_runtime",)

    def __init__(self, runtime: WorkflowRun) -> None:
        self._runtime = runtime

    @property
    def instance_id(self) -> str:
        """The id of the running instance (stable across replays and recurs)."""
        return self._runtime.instance_id

    @property
    def workflow_name(self) -> str:
        return self._runtime.workflow.name

    @property
    def is_replaying(self) -> bool:
        """True while the code re-runs steps already recorded in history.

        Use it to skip side effects in workflow code (printing, logging) during replay.
        """
        return self._runtime.is_replaying

    def now(self) -> datetime:
        """The current UTC time, recorded: replay returns the same instant."""
        return self._runtime.deterministic("now", None)

    def uuid(self) -> uuid.UUID:
        """A random UUID, recorded: replay returns the same one."""
        return self._runtime.deterministic("uuid", None)

    def random(self) -> float:
        """A random float in [0, 1), recorded: replay returns the same number."""
        return self._runtime.deterministic("random", None)

    def __repr__(self) -> str:
        return f"<WorkflowContext {self.workflow_name} {self.instance_id}>"


class ActivityContext:
    """What an activity function receives as ``ctx``.

    ``session`` opens the activity's database transaction lazily, at first use, so an
    activity that never touches the database never holds SQLite's single writer lock.
    """

    __slots__ = (
        "_activity",
        "_guard",
        "_runtime",
        "_session",
        "_state",
        "attempt",
        "step_id",
    )

    def __init__(
        self, runtime: WorkflowRun, activity: Activity[Any, Any], step_id: str, attempt: int
    ) -> None:
        self._runtime = runtime
        self._activity = activity
        self.step_id = step_id
        self.attempt = attempt
        self._session: Session | None = None
        # Guards the race between a timed-out attempt's thread committing and the workflow
        # giving up on it: exactly one of "committed" and "abandoned" wins.
        self._guard = threading.Lock()
        self._state = "running"

    @property
    def instance_id(self) -> str:
        return self._runtime.instance_id

    @property
    def workflow_name(self) -> str:
        return self._runtime.workflow.name

    @property
    def activity_name(self) -> str:
        return self._activity.name

    @property
    def is_replaying(self) -> bool:
        """Always False: an activity body only runs when its step is not recorded yet."""
        return False

    @property
    def session(self) -> Any:
        """The database connection inside this activity's transaction (APSW for SQLite).

        Rows written here commit together with the step's history record, or not at all.
        """
        if not self._activity.transactional:
            raise RomancyError(
                f"activity {self._activity.name!r} is declared transactional=False, so it "
                "has no ctx.session; remove transactional=False to write in its transaction."
            )
        if self._session is None:
            self._session = self._runtime.app.store.open_session()
        return self._session.connection

    def __repr__(self) -> str:
        return f"<ActivityContext {self.activity_name} {self.step_id} attempt {self.attempt}>"
