"""Change detection for other processes sharing the database file.

SQLite has no LISTEN/NOTIFY. What it has is ``PRAGMA data_version``: on one connection, the
value changes whenever *another* connection (in this process or any other) committed to the
file since the last time it was read. Reading it takes no lock beyond the WAL index header.

*When* to read it: a thread that wakes up every 2 ms costs tens of microseconds of CPU per
wake-up — percents of a core for an app that is idle. So on Linux the watcher sleeps in
``select`` on an inotify descriptor watching the database's folder: a WAL commit is a
``write()`` to the ``-wal`` file, which wakes the watcher at once, in whichever process it
was written. It then reads ``data_version`` to tell a real commit from other writes, and
waits ``interval`` (2 ms) before looking again; while the commits it sees change nothing
it watches (a busy process's own steps), the wait doubles up to ``idle_interval`` (20 ms).
So a busy file costs at most ~50 checks a second and an idle one costs nothing. Without
inotify (another OS, a network file system that does not report remote writes, an in-
memory database) it polls: every ``interval`` while the file is busy, every
``idle_interval`` (20 ms) after ``idle_after`` seconds of quiet. Either way a safety check
runs every ``idle_interval`` × 25 (0.5 s).

When the value moves, the watcher runs one small probe — the newest message id, the
earliest timer and the number of instances waiting for a worker, index lookups — and
calls back only if one of them changed, so the engine's event loop is only disturbed
when something it may have to wake has appeared.

https://sqlite.org/pragma.html#pragma_data_version
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import apsw

from romancy_nb.store.protocol import ACTIVE_STATUSES, ChangeHint

log = logging.getLogger("romancy_nb")

_PROBE = (
    "SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'channel_messages'), "
    "(SELECT min(fire_at) FROM waits WHERE fire_at IS NOT NULL), "
    "(SELECT count(*) FROM workflow_instances WHERE lock_owner IS NULL "
    f"AND status IN ({', '.join(repr(status) for status in ACTIVE_STATUSES)}))"
)
_IN_MODIFY, _IN_CREATE, _IN_MOVED_TO = 0x2, 0x100, 0x80


def probe(connection: apsw.Connection) -> tuple[ChangeHint, int]:
    """The newest message id ever stored, the earliest pending timer, and how many active
    instances nobody holds (started for any worker, released): the hint, and that count,
    whose change is news even when the hint's flag stays the same."""
    row: tuple[Any, ...] = connection.execute(_PROBE).fetchall()[0]
    last_id, next_fire_at, unowned = row
    return ChangeHint(last_id or 0, next_fire_at, runnable=unowned > 0), unowned


def data_version(connection: apsw.Connection) -> int:
    """Changes when another connection committed since this one last asked."""
    rows: list[tuple[Any, ...]] = connection.execute("PRAGMA data_version").fetchall()
    return int(rows[0][0])


class FolderWrites:
    """Blocks until a file in ``folder`` is written (Linux inotify), or until woken."""

    def __init__(self, folder: str) -> None:
        if not sys.platform.startswith("linux"):
            raise OSError("inotify is Linux only")
        # The running interpreter already links libc: CDLL(None) finds its symbols without
        # find_library, which runs `ldconfig -p` in a subprocess (~5 ms on every App open).
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        mask = _IN_MODIFY | _IN_CREATE | _IN_MOVED_TO
        if libc.inotify_add_watch(fd, os.fsencode(folder), mask) < 0:
            errno = ctypes.get_errno()
            os.close(fd)
            raise OSError(errno, f"cannot watch {folder}")
        self._fd = fd
        self._wake_r, self._wake_w = os.pipe()

    def wait(self, timeout: float) -> bool:
        """Return when something was written (events drained: True), woken, or ``timeout``."""
        ready, _, _ = select.select([self._fd, self._wake_r], [], [], timeout)
        if self._fd not in ready:
            return False
        try:
            while os.read(self._fd, 65536):
                pass
        except BlockingIOError:
            pass
        return True

    def wake(self) -> None:
        os.write(self._wake_w, b"x")

    def close(self) -> None:
        for fd in (self._fd, self._wake_r, self._wake_w):
            os.close(fd)


class ChangeWatcher:
    """A daemon thread that reads ``data_version`` on its own connection when needed.

    ``on_change`` runs in the watcher thread (hand it to your event loop with
    ``call_soon_threadsafe``); it is called once at start with the current state, then after
    every change of the hint. ``folder`` (the database's) enables inotify.
    """

    def __init__(
        self,
        connect: Callable[[], apsw.Connection],
        on_change: Callable[[ChangeHint], None],
        interval: float,
        *,
        folder: str | None = None,
        idle_interval: float = 0.02,
        idle_after: float = 0.5,
    ) -> None:
        if interval <= 0:
            raise ValueError("the watch interval must be a positive number of seconds")
        self._connect = connect
        self._on_change = on_change
        self._interval = interval
        self._idle_interval = max(interval, idle_interval)
        self._idle_after = idle_after
        self._writes: FolderWrites | None = None
        if folder is not None:
            try:
                self._writes = FolderWrites(folder)
            except OSError as error:
                log.debug("no inotify for %s (%s): polling instead", folder, error)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="romancy-watch", daemon=True)
        self._thread.start()

    @property
    def uses_inotify(self) -> bool:
        return self._writes is not None

    def _run(self) -> None:
        try:
            connection = self._connect()
        except Exception:
            log.exception("the change watcher could not open the database; sweeps only")
            return
        try:
            self._loop(connection)
        except apsw.Error:
            if not self._stopping.is_set():
                log.exception("the change watcher stopped on a database error; sweeps only")
        finally:
            connection.close()

    def _loop(self, connection: apsw.Connection) -> None:
        last_version: int | None = None
        last_state: tuple[ChangeHint, int] | None = None
        quiet_since = time.monotonic()
        pause = self._interval
        while not self._stopping.is_set():
            version = data_version(connection)
            if version != last_version:
                last_version = version
                quiet_since = time.monotonic()
                state = probe(connection)
                if state != last_state:
                    last_state = state
                    pause = self._interval
                    try:
                        self._on_change(state[0])
                    except Exception:
                        log.exception("change watcher callback failed")
                else:  # commits that add no message nor timer (steps...): look less often
                    pause = min(pause * 2, self._idle_interval)
            if self._writes is not None:
                # coalesce a burst of commits into one check per pause, then block until
                # the next write; a busy process's own steps so cost ~50 checks a second
                time.sleep(pause)
                if not self._writes.wait(self._idle_interval * 25):
                    pause = self._interval  # quiet: the next change is answered at once
            else:
                quiet = time.monotonic() - quiet_since > self._idle_after
                time.sleep(self._idle_interval if quiet else pause)

    def stop(self) -> None:
        """Stop watching and wait (briefly) for the thread to close its connection."""
        self._stopping.set()
        if self._writes is not None:
            self._writes.wake()
        self._thread.join(timeout=5)
        if self._writes is not None and not self._thread.is_alive():
            self._writes.close()
            self._writes = None


__all__ = ["ChangeWatcher", "FolderWrites", "data_version", "probe"]
