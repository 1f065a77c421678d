"""WAL checkpoints in a thread of their own, off the commit path.

SQLite's automatic checkpoint runs inside the commit that crosses ``wal_autocheckpoint``
pages: every thousandth durable step would copy ~4 MiB back into the database file and
fsync it, a multi-millisecond stall in the middle of a workflow. Instead, a WAL hook on
our connections only *notices* that the log is long and wakes this thread, which runs a
``PASSIVE`` checkpoint on its own connection while the engine keeps committing.
https://sqlite.org/wal.html#automatic_checkpoint
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import apsw


class Checkpointer:
    """Wakes on a long WAL and checkpoints it in the background."""

    def __init__(self, connect: Callable[[], apsw.Connection], pages: int = 1000) -> None:
        self._connect = connect
        self._pages = pages
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.checkpoints = 0

    def hook(self, connection: apsw.Connection, database: str, pages: int) -> int:
        """The WAL hook installed on each connection: called after every commit."""
        if pages >= self._pages and not self._stopping:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="romancy-checkpoint", daemon=True
                    )
                    self._thread.start()
            self._wake.set()
        return apsw.SQLITE_OK

    def _run(self) -> None:
        connection = self._connect()
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except apsw.Error:
                    pass  # busy or locked: the next long-WAL commit wakes us again
        finally:
            connection.close()

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
