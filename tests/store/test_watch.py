"""The change watcher: another connection's commit is reported; idle costs nothing."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from romancy_nb.store.protocol import ChangeHint, MessageRecord
from romancy_nb.store.sqlite.store import SqliteStore
from romancy_nb.store.sqlite.watch import ChangeWatcher
from romancy_nb.testing import wait_until


def _message(n: int) -> MessageRecord:
    return MessageRecord(0, f"m{n}", "watched", None, str(n), "{}", None, time.time())


@pytest.mark.parametrize("use_folder", [True, False], ids=["inotify", "polling"])
def test_a_commit_elsewhere_is_reported(tmp_path: Path, use_folder: bool) -> None:
    store = SqliteStore(tmp_path / "w.db")
    store.migrate()
    other = SqliteStore(tmp_path / "w.db")  # another connection, as another process has
    seen: list[ChangeHint] = []
    lock = threading.Lock()

    def on_change(hint: ChangeHint) -> None:
        with lock:
            seen.append(hint)

    watcher = ChangeWatcher(
        store.connect, on_change, 0.002, folder=str(tmp_path) if use_folder else None
    )
    try:
        assert watcher.uses_inotify == (use_folder and sys.platform.startswith("linux"))
        wait_until(lambda: seen, message="the initial hint")
        assert seen[0] == ChangeHint(0, None)
        other.publish(_message(1))
        wait_until(lambda: seen[-1].last_message_id == 1, timeout=5, message="message 1")
        other.publish(_message(2))
        wait_until(lambda: seen[-1].last_message_id == 2, timeout=5, message="message 2")
    finally:
        watcher.stop()
        other.close()
        store.close()


def test_a_commit_that_changes_nothing_watched_is_not_reported(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "w.db")
    store.migrate()
    seen: list[ChangeHint] = []
    watcher = ChangeWatcher(store.connect, seen.append, 0.002, folder=str(tmp_path))
    try:
        wait_until(lambda: seen)
        store.connection.execute("CREATE TABLE unrelated (x)")
        store.connection.execute("INSERT INTO unrelated VALUES (1)")
        store.publish(_message(1))  # a marker: once it is seen, the others were checked
        wait_until(lambda: seen[-1].last_message_id == 1, timeout=5)
        assert seen == [ChangeHint(0, None), ChangeHint(1, None)]
    finally:
        watcher.stop()
        store.close()
