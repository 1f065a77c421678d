"""The transaction of one attempt of a transactional activity.

``ctx.session`` opens it lazily, at first use, so an activity that never touches the
database never holds SQLite's single writer lock. The attempt's result is recorded in the
same transaction (exactly once); a sync attempt that timed out is *abandoned* instead, and
exactly one of "committed" and "abandoned" wins the race between its thread finishing and
the workflow giving up on it.

A store error while opening or committing is the engine's, not the user's: it is raised as
:class:`~romancy_nb.engine.signals.StoreFault`, which the runner answers by retrying the
attempt (its writes rolled back) without counting it against the retry policy — unless
the history shows that the commit landed after all (its reply was lost with the
connection), in which case the recorded result is used and nothing runs twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any

from romancy_nb.engine.signals import LeaseLostSignal, StoreFault
from romancy_nb.errors import StoreError

if TYPE_CHECKING:
    from romancy_nb.engine.gate import StoreGate
    from romancy_nb.store import Session, StepRecord, Store
    from romancy_nb.store.protocol import OutboxEvent

log = logging.getLogger("romancy_nb")


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class AttemptSession:
    """Owns the optional transaction of one attempt; safe to end from either side."""

    __slots__ = ("_gate", "_session", "_store", "events", "state")

    _guard = threading.Lock()
    """One lock for every attempt, held while an attempt commits or is abandoned: commits
    of sessions are serialized by SQLite's single writer anyway, and one shared lock costs
    nothing on the path of every durable step, where a lock per attempt did."""

    def __init__(self, store: Store, gate: StoreGate) -> None:
        self._store = store
        self._gate = gate
        self._session: Session | None = None
        self.state = "running"
        """``running``, then ``committed`` (its step is recorded) or ``abandoned``."""
        self.events: list[OutboxEvent] = []
        """The outbox events the attempt sent (``ctx.send_event``), written with its step."""

    @property
    def is_open(self) -> bool:
        return self._session is not None

    def connection(self) -> Any:
        """The backend connection inside the attempt's transaction (opened now if needed)."""
        if self._session is None:
            try:
                # On the event loop (an async activity) the lock must not be waited for
                # inside SQLite: fail at once, and the attempt is retried after a pause.
                self._session = self._store.open_session(wait=not _on_event_loop())
            except StoreError as error:
                raise StoreFault(error) from error
            self._gate.session_opened()
        return self._session.connection

    def commit_step(self, step: StepRecord, owner: str) -> bool:
        """Record ``step`` in the transaction and commit, unless the attempt was abandoned.

        False if it was abandoned (nothing committed). A lost lease rolls everything back
        and stops the run.
        """
        with self._guard:
            if self.state == "abandoned":
                return False
            session = self._session
            assert session is not None
            try:
                if not session.record_step(step, owner, self.events):
                    self._end(commit=False)
                    raise LeaseLostSignal(step.instance_id)
                self._end(commit=True)
            except StoreError as error:
                self._end(commit=False)
                raise StoreFault(error) from error
            self.state = "committed"
            return True

    def abandon(self) -> bool:
        """Give up on the attempt (it timed out); False if it committed first."""
        with self._guard:
            if self.state == "committed":
                return False
            self.state = "abandoned"
            return True

    def rollback(self) -> None:
        """Roll back whatever is still open (the attempt failed, timed out or was cancelled).

        Called on the way out of a failed attempt: a store error here is logged, not raised,
        so it cannot hide the attempt's own outcome (the store discards the connection).
        """
        if self._session is not None and self.state != "committed":
            try:
                self._end(commit=False)
            except StoreError:
                log.exception("rolling back an activity's session failed")

    def _end(self, *, commit: bool) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        try:
            if commit:
                try:
                    session.commit()
                except BaseException:
                    # whatever the failed commit left open goes now, not with the connection
                    with contextlib.suppress(StoreError):
                        session.rollback()
                    raise
            else:
                session.rollback()
        finally:
            self._gate.session_closed()


__all__ = ["AttemptSession"]
