"""The error tree of romancy_nb.

Every error a user can catch derives from :class:`RomancyError`. Errors carry the facts
that explain them as attributes (not only in the message) so that tools and notebooks can
show them, and they pickle with those attributes (``__reduce__``) so they survive a trip
through a process pool or a store.

Control flow inside the engine (suspend, recur, cancel) does *not* use these classes: it
uses ``BaseException`` signals from ``romancy_nb.engine.signals`` so that a user's
``except Exception`` can never swallow it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class RomancyError(Exception):
    """Base class of every error raised by romancy_nb."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self._fields = fields
        for key, value in fields.items():
            setattr(self, key, value)

    @property
    def fields(self) -> dict[str, Any]:
        """The facts the error was raised with (also its attributes), for tools and stores."""
        return dict(self._fields)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self._fields))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[RomancyError], message: str, fields: dict[str, Any]) -> RomancyError:
    error = RomancyError.__new__(cls)
    RomancyError.__init__(error, message, **fields)
    return error


class TerminalError(RomancyError):
    """Raise from an activity to fail it at once: a terminal error is never retried."""

    def __init__(self, message: str = "terminal error", **fields: Any) -> None:
        super().__init__(message, **fields)


@dataclass(frozen=True)
class AttemptError:
    """One failed attempt of an activity, as recorded durably in the store."""

    attempt: int
    error_type: str
    message: str
    at: float

    def __str__(self) -> str:
        return f"attempt {self.attempt}: {self.error_type}: {self.message}"


class RetryExhaustedError(RomancyError):
    """An activity failed on every attempt its retry policy allowed.

    ``attempts`` lists every attempt's error, oldest first, so nothing is lost to the
    last failure hiding the first.
    """

    activity: str
    step_id: str
    attempts: list[AttemptError]

    def __init__(self, activity: str, step_id: str, attempts: list[AttemptError]) -> None:
        lines = "\n".join(f"  {a}" for a in attempts)
        super().__init__(
            f"activity {activity!r} (step {step_id}) failed after {len(attempts)} "
            f"attempt(s):\n{lines}",
            activity=activity,
            step_id=step_id,
            attempts=list(attempts),
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.activity, self.step_id, self.attempts))


class ActivityTimeoutError(RomancyError):
    """An activity attempt ran longer than its ``timeout=``; retried like other errors."""

    def __init__(self, activity: str, timeout: float) -> None:
        super().__init__(
            f"activity {activity!r} timed out after {timeout:g} s",
            activity=activity,
            timeout=timeout,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.activity, self.timeout))


class EventTimeoutError(RomancyError):
    """``ctx.wait_event`` reached its timeout before the event arrived."""


class ChannelMessageTimeoutError(RomancyError):
    """``ctx.receive`` reached its timeout before a message arrived."""


class ChannelModeConflictError(RomancyError):
    """A channel already has subscribers in another mode."""


class ChannelNotSubscribedError(RomancyError):
    """``ctx.receive`` on a channel the instance has not subscribed to (``ctx.subscribe``)."""


class DeterminismViolation(RomancyError):
    """Replayed workflow code asked for a different step than history recorded.

    Raised instead of returning a stale cached result. ``diff`` is a readable unified diff
    of the recorded step against the one the current code asked for.
    """

    step_id: str
    expected: dict[str, Any]
    actual: dict[str, Any]
    diff: str

    def __init__(
        self,
        instance_id: str,
        step_id: str,
        expected: dict[str, Any],
        actual: dict[str, Any],
        diff: str,
    ) -> None:
        super().__init__(
            f"instance {instance_id!r} is not deterministic at step {step_id}: the code "
            f"now asks for something other than what history recorded.\n{diff}\n"
            "Undo the change to the workflow code, or rewind the instance to before the "
            "step (app.rewind, or on_divergence='rewind' to do it by itself).",
            instance_id=instance_id,
            step_id=step_id,
            expected=expected,
            actual=actual,
            diff=diff,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.instance_id, self.step_id, self.expected, self.actual, self.diff),
        )


class WorkflowCancelled(RomancyError):
    """The instance was cancelled (``app.cancel``); its compensations have run."""

    def __init__(self, instance_id: str, reason: str | None = None) -> None:
        super().__init__(
            f"workflow instance {instance_id!r} was cancelled" + (f": {reason}" if reason else ""),
            instance_id=instance_id,
            reason=reason,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.instance_id, self.reason))


class WorkflowFailed(RomancyError):
    """A workflow failed with an error whose original class could not be rebuilt.

    ``error_type`` names the original class, ``traceback`` is the original traceback text.
    """


class WorkflowNotFound(RomancyError, LookupError):
    """No such workflow definition, or no such instance."""


class InvalidWorkflowState(RomancyError):
    """The operation does not apply to the instance in its current state."""


class StepNotFound(RomancyError, LookupError):
    """An instance's history holds no step with that id (``app.rewind(iid, to=...)``)."""


class SerializationError(RomancyError, TypeError):
    """A value cannot be stored as JSON for the annotated type; nothing was written."""


class StoreError(RomancyError):
    """The store cannot be opened or used (missing folder, not a database, ...).

    Inside the engine's own bookkeeping a store error is an infrastructure fault, never a
    workflow failure: the run pauses and is resumed (see ``transient``).
    """

    transient = False
    """True when retrying the same call later may succeed (a lock, a full disk, an I/O
    error, a lost connection); the engine retries those in place, with backoff."""


class DatabaseLockedError(StoreError):
    """Another writer held the database for longer than the busy timeout."""

    transient = True


class StoreUnavailableError(StoreError):
    """The store cannot be written or read right now (disk full, I/O error, connection
    lost); the same call may succeed once the fault is gone."""

    transient = True


class SharedFileError(RomancyError):
    """Python's ``sqlite3`` module was asked to open a file an open store of this process
    holds: refused, because closing that connection would drop the store's file locks
    (two SQLite libraries in one process). Use ``rn.connect(path)``, ``ctx.session``, the
    views or ``%%sql`` instead."""


class LockLostError(RomancyError):
    """This worker no longer holds the instance's lease; another worker took it over."""


__all__ = [
    "ActivityTimeoutError",
    "AttemptError",
    "ChannelMessageTimeoutError",
    "ChannelModeConflictError",
    "ChannelNotSubscribedError",
    "DatabaseLockedError",
    "DeterminismViolation",
    "EventTimeoutError",
    "InvalidWorkflowState",
    "LockLostError",
    "RetryExhaustedError",
    "RomancyError",
    "SerializationError",
    "SharedFileError",
    "StepNotFound",
    "StoreError",
    "StoreUnavailableError",
    "TerminalError",
    "WorkflowCancelled",
    "WorkflowFailed",
    "WorkflowNotFound",
]
