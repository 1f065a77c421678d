"""Change detection through LISTEN/NOTIFY: other workers' messages, timers, runnable
instances and cancel requests, pushed by the server within a round trip.

Triggers (see the migration) announce each such change on the ``romancy_nb`` channel
inside the writing transaction, so a notification arrives only once its change is
committed and visible. The :class:`NotifyWatcher` thread LISTENs on a connection of its
own, blocks until a notification arrives and reports it at once, as one
:class:`~romancy_nb.store.protocol.ChangeHint`; notifications that arrive within ``interval``
of a report are gathered into the next one (a burst of commits becomes a few calls).

Notifications sent while the watcher has no connection are lost, so after every
(re)connection it reports a catch-up hint — the newest message id, the earliest timer,
``runnable`` and ``cancels`` — and the engine looks for everything once. A connection lost
(the server restarted, a network cut that TCP keepalives detect) is reopened with
backoff; polling sweeps stay the safety net meanwhile.

``stop`` NOTIFYs a channel only this watcher listens on, so the thread wakes at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable

import psycopg

from romancy_nb.errors import StoreError
from romancy_nb.store.postgres.connections import Connection, Connections
from romancy_nb.store.postgres.sql import CHANNEL, NEWEST_MESSAGE
from romancy_nb.store.protocol import ChangeHint

log = logging.getLogger("romancy_nb")

_PROBE = f"SELECT ({NEWEST_MESSAGE}), (SELECT min(fire_at) FROM waits WHERE fire_at IS NOT NULL)"
_IDLE_WAIT = 5.0
"""Seconds one wait for a notification lasts before the thread looks at ``stop`` again
(``stop`` wakes it sooner; this only bounds a stop whose wake-up could not be sent)."""
_FIRST_BACKOFF, _MAX_BACKOFF = 0.05, 2.0


def probe(connection: Connection) -> ChangeHint:
    """Everything worth looking at now: the catch-up hint after a (re)connection."""
    row = connection.execute(_PROBE).fetchone()
    assert row is not None
    return ChangeHint(row[0] or 0, row[1], runnable=True, cancels=True)


class Burst:
    """What the notifications of one burst say, folded into one hint."""

    def __init__(self, last_message_id: int) -> None:
        self.last_message_id = last_message_id
        self.next_fire_at: float | None = None
        self.runnable = False
        self.cancels = False
        self.news = False

    def add(self, payloads: Iterable[str]) -> None:
        for payload in payloads:
            kind, value = payload[:1], payload[1:]
            try:
                if kind == "m":
                    self.last_message_id = max(self.last_message_id, int(value))
                elif kind == "t":
                    fire_at = float(value)
                    if self.next_fire_at is None or fire_at < self.next_fire_at:
                        self.next_fire_at = fire_at
                elif kind == "r":
                    self.runnable = True
                elif kind == "c":
                    self.cancels = True
                else:
                    continue
            except ValueError:
                log.debug("ignoring the notification %r", payload)
                continue
            self.news = True

    def hint(self) -> ChangeHint:
        return ChangeHint(self.last_message_id, self.next_fire_at, self.runnable, self.cancels)


class NotifyWatcher:
    """A daemon thread that LISTENs and calls ``on_change`` (from that thread) with a
    :class:`ChangeHint` per burst of notifications; see the module docstring."""

    def __init__(
        self,
        connections: Connections,
        on_change: Callable[[ChangeHint], None],
        interval: float,
    ) -> None:
        if interval <= 0:
            raise ValueError("the watch interval must be a positive number of seconds")
        self._c = connections
        self._on_change = on_change
        self._interval = interval
        self._own = f"romancy_nb_stop_{uuid.uuid4().hex}"
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._last_message_id = 0
        self._reported = 0.0
        """When the last burst was reported (``time.monotonic()``)."""
        self._thread = threading.Thread(target=self._run, name="romancy-listen", daemon=True)
        self._thread.start()

    @property
    def connected(self) -> threading.Event:
        """Set while the watcher LISTENs (tests wait for it after a server restart)."""
        return self._connected

    def _run(self) -> None:
        backoff = _FIRST_BACKOFF
        while not self._stopping.is_set():
            try:
                connection = self._c.connect()
            except StoreError as error:
                log.debug("the change watcher cannot connect (%s); retrying", error)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            try:
                self._listen(connection)
                backoff = _FIRST_BACKOFF
                self._loop(connection)
            except psycopg.Error as error:
                if not self._stopping.is_set():
                    log.info("the change watcher lost its connection (%s); reconnecting", error)
                    self._stopping.wait(backoff)
            finally:
                self._connected.clear()
                connection.close()

    def _listen(self, connection: Connection) -> None:
        connection.execute(f"LISTEN {CHANNEL}")
        connection.execute(f"LISTEN {self._own}")
        self._connected.set()
        hint = probe(connection)  # after LISTEN: nothing committed later is missed
        self._last_message_id = max(self._last_message_id, hint.last_message_id)
        self._report(hint._replace(last_message_id=self._last_message_id))

    def _loop(self, connection: Connection) -> None:
        while not self._stopping.is_set():
            burst = Burst(self._last_message_id)
            first = [n.payload for n in connection.notifies(timeout=_IDLE_WAIT, stop_after=1)]
            if not first:
                continue
            burst.add(first)
            # Leading edge: a lone change is reported at once (with whatever arrived with
            # it); in a burst, reports are at least ``interval`` apart.
            burst.add(n.payload for n in connection.notifies(timeout=0.0))
            deadline = self._reported + self._interval
            while (left := deadline - time.monotonic()) > 0 and not self._stopping.is_set():
                burst.add(n.payload for n in connection.notifies(timeout=left))
            if burst.news and not self._stopping.is_set():
                self._last_message_id = burst.last_message_id
                self._reported = time.monotonic()
                self._report(burst.hint())

    def _report(self, hint: ChangeHint) -> None:
        try:
            self._on_change(hint)
        except Exception:
            log.exception("change watcher callback failed")

    def stop(self) -> None:
        """Stop watching and wait (briefly) for the thread to close its connection."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._connected.is_set():
            with contextlib.suppress(StoreError):  # if away, the thread sees it in _IDLE_WAIT
                self._c.write(f"NOTIFY {self._own}")
        self._thread.join(timeout=_IDLE_WAIT + 1)


__all__ = ["Burst", "NotifyWatcher", "probe"]
