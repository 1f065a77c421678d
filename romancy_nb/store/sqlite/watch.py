"""Change detection for other processes sharing the database file.

SQLite has no LISTEN/NOTIFY. What it has is ``PRAGMA data_version``: on one connection, the
value changes whenever *another* connection (in this process or any other) committed to the
file since the last time it was read. Reading it touches no table, takes no lock beyond the
WAL index header, and costs about a microsecond, so a thread can ask every few milliseconds.

When the value moves, the watcher runs one small probe — the newest message id and the
earliest timer, both index lookups — and calls back only if one of them changed. So a busy
process committing thousands of steps a second costs the watcher a probe per poll, and the
engine's event loop is only disturbed when something it may have to wake has appeared.

https://sqlite.org/pragma.html#pragma_data_version
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import apsw

from romancy_nb.store.protocol import ChangeHint

log = logging.getLogger("romancy_nb")

_PROBE = (
    "SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'channel_messages'), "
    "(SELECT min(fire_at) FROM waits WHERE fire_at IS NOT NULL)"
)


def probe(connection: apsw.Connection) -> ChangeHint:
    """The newest message id ever stored and the earliest pending timer."""
    last_id, next_fire_at = connection.execute(_PROBE).fetchall()[0]
    return ChangeHint(last_id or 0, next_fire_at)


def data_version(connection: apsw.Connection) -> int:
    """Changes when another connection committed since this one last asked."""
    return connection.execute("PRAGMA data_version").fetchall()[0][0]


class ChangeWatcher:
    """A daemon thread that polls ``data_version`` on its own connection.

    ``on_change`` runs in the watcher thread (hand it to your event loop with
    ``call_soon_threadsafe``); it is called once at start with the current state, then after
    every change of the hint.
    """

    def __init__(
        self,
        connect: Callable[[], apsw.Connection],
        on_change: Callable[[ChangeHint], None],
        interval: float,
    ) -> None:
        if interval <= 0:
            raise ValueError("the watch interval must be a positive number of seconds")
        self._connect = connect
        self._on_change = on_change
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="romancy-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            connection = self._connect()
        except Exception:
            log.exception("the change watcher could not open the database; sweeps only")
            return
        try:
            last_version: int | None = None
            last_hint: ChangeHint | None = None
            while not self._stopping.is_set():
                version = data_version(connection)
                if version != last_version:
                    last_version = version
                    hint = probe(connection)
                    if hint != last_hint:
                        last_hint = hint
                        try:
                            self._on_change(hint)
                        except Exception:
                            log.exception("change watcher callback failed")
                self._stopping.wait(self._interval)
        except apsw.Error:
            if not self._stopping.is_set():
                log.exception("the change watcher stopped on a database error; sweeps only")
        finally:
            connection.close()

    def stop(self) -> None:
        """Stop polling and wait (briefly) for the thread to close its connection."""
        self._stopping.set()
        self._thread.join(timeout=5)


__all__ = ["ChangeWatcher", "data_version", "probe"]
