"""Control-flow signals of the engine.

They derive from ``BaseException`` so that a workflow's ``except Exception`` cannot swallow
them (edda's timer signal is an ``Exception`` and gets swallowed; temporal's
``ContinueAsNewError`` is a ``BaseException`` for this reason).
"""

from __future__ import annotations


class EngineSignal(BaseException):
    """Base of the engine's internal signals; never shown to users as an error."""


class SuspendSignal(EngineSignal):
    """The workflow waits (timer, event, message): unload it and replay it when woken."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class CancelSignal(EngineSignal):
    """The instance was cancelled: stop running workflow code and compensate."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LeaseLostSignal(EngineSignal):
    """Another worker owns this instance now: stop at once without writing anything."""


class RecurSignal(SuspendSignal):
    """``ctx.recur(...)``: archive this run's history and continue with new input.

    Like temporal's ``ContinueAsNewError`` it is a ``BaseException``; it is a kind of
    suspension (the run ends here, the instance lives on), so the runner's suspend path
    handles it.
    """

    def __init__(self, values: tuple[object, ...], input_json: str) -> None:
        super().__init__("recurred")
        self.values = values
        self.input_json = input_json


class ReplayFrontier(EngineSignal):
    """A replay-only run reached a step history does not hold: it stops before acting."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class StoreFault(EngineSignal):
    """The store failed in the engine's own bookkeeping with an error a retry in place
    cannot fix: stop the run without recording an outcome; the instance is resumed later.

    A ``BaseException``, so neither the workflow's ``except Exception`` nor the runner's
    failure path (which would run compensations) can take it for the user's error.
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error
