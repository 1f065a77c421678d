"""``wait_for_locks=False``: the engine connection never busy-waits; the others still wait.

The engine calls the store from its event loop: there, a write that meets another writer
must raise ``DatabaseLockedError`` at once (the engine awaits and retries) instead of SQLite
sleeping on the loop thread for the busy timeout. Sessions, the heartbeat and migrations
run on threads or once at open and keep waiting for the lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import apsw
import pytest

import romancy_nb as rn
from romancy_nb.store import InstanceRecord, WorkerRecord, open_store


def _instance(iid: str) -> InstanceRecord:
    now = time.time()
    return InstanceRecord(iid, "wf", "running", "{}", None, None, None, None, None, now, now)


@contextmanager
def _writer_holding(path: Path) -> Iterator[apsw.Connection]:
    """Another connection holding the write lock until the block ends."""
    locker = apsw.Connection(str(path))
    locker.execute("BEGIN IMMEDIATE")
    try:
        yield locker
    finally:
        locker.execute("ROLLBACK")
        locker.close()


def test_the_engine_connection_fails_at_once_while_sessions_wait(tmp_path: Path) -> None:
    path = tmp_path / "locks.db"
    # An hour of busy timeout: a connection that waited would hang this test, not pass it.
    store = open_store(path, wait_for_locks=False, busy_timeout=3600)
    try:
        store.migrate()
        assert store.effective_settings()["busy_timeout"] == 0
        with _writer_holding(path), pytest.raises(rn.DatabaseLockedError) as info:
            store.create_instance(_instance("locked"))
        assert info.value.transient
        assert "does not wait" in str(info.value)
        assert store.get_instance("locked") is None
        assert store.create_instance(_instance("free"))

        session = store.open_session()  # the session's connection keeps the busy timeout
        try:
            assert next(iter(session.connection.execute("PRAGMA busy_timeout")))[0] == 3600_000
        finally:
            session.rollback()
    finally:
        store.close()


def _in_thread_while_locked(path: Path, call: Callable[[], object]) -> BaseException | None:
    """Run ``call`` in a thread while another connection holds the lock, released shortly
    after the call started; what the call raised (None if it waited and succeeded)."""
    outcome: list[BaseException | None] = []
    started = threading.Event()

    def run() -> None:
        started.set()
        try:
            call()
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)

    with _writer_holding(path):
        thread = threading.Thread(target=run)
        thread.start()
        started.wait()
        time.sleep(0.2)  # let the call reach SQLite's busy wait (not an assertion)
    thread.join()
    return outcome[0]


def test_heartbeat_sessions_and_migrations_wait_for_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "waits.db"
    store = open_store(path, wait_for_locks=False, busy_timeout=30)
    try:
        store.migrate()
        now = time.time()
        store.register_worker(WorkerRecord("w1", "host", 1, None, now, now))

        assert _in_thread_while_locked(path, lambda: store.heartbeat("w1", now + 1)) is None
        assert store.list_workers()[0].heartbeat_at == now + 1

        def session_write() -> None:
            session = store.open_session()
            session.connection.execute("CREATE TABLE user_rows (x)")
            session.commit()

        assert _in_thread_while_locked(path, session_write) is None
        assert store.read_table("user_rows") is not None
    finally:
        store.close()

    fresh = tmp_path / "fresh.db"
    apsw.Connection(str(fresh)).close()  # an empty database another process writes to
    opened = open_store(fresh, wait_for_locks=False, busy_timeout=30)
    try:
        assert _in_thread_while_locked(fresh, opened.migrate) is None
        assert opened.read_table("workflow_instances") is not None
    finally:
        opened.close()
