"""LISTEN/NOTIFY: what another process writes reaches the watcher as one hint per change,
and the watcher reconnects (and catches up) after the server restarts."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator

import pytest

from romancy_nb.store.postgres.store import PostgresStore
from romancy_nb.store.postgres.watch import NotifyWatcher
from romancy_nb.store.protocol import ChangeHint, MessageRecord, WaitSpec
from tests.postgres_server import PostgresServer
from tests.store.postgres.records import instance

Hints = queue.Queue[ChangeHint]


@pytest.fixture
def other(pg_url: str, pg_store: PostgresStore) -> Iterator[PostgresStore]:
    """Another store on the same database: another worker's writes."""
    store = PostgresStore(pg_url)
    yield store
    store.close()


def _message(message_id: str) -> MessageRecord:
    return MessageRecord(0, message_id, "news", None, "1", "{}", None, time.time())


def _watching(store: PostgresStore) -> tuple[Hints, NotifyWatcher]:
    hints: Hints = queue.Queue()
    watch = store.watch(hints.put, 0.005)
    caught_up = hints.get(timeout=10)  # at start: everything worth looking at once
    assert caught_up.runnable and caught_up.cancels
    return hints, watch


def test_each_kind_of_change_is_reported(pg_store: PostgresStore, other: PostgresStore) -> None:
    hints, watch = _watching(pg_store)
    try:
        first = other.publish(_message("a"))
        assert hints.get(timeout=10) == ChangeHint(first, None)

        sleeper = instance("w1")
        other.create_instance(sleeper)  # created leased: nothing to claim
        fire_at = time.time() + 3600
        wait = WaitSpec("sleep:1", "sleep", "sleep", None, None, fire_at)
        assert other.suspend(sleeper.instance_id, "w1", "waiting_for_timer", [wait], 1, 0) is None
        assert hints.get(timeout=10) == ChangeHint(first, fire_at)

        unclaimed = instance(None)
        other.create_instance(unclaimed)
        assert hints.get(timeout=10) == ChangeHint(first, None, runnable=True)

        other.request_cancel(sleeper.instance_id, "stop")
        assert hints.get(timeout=10) == ChangeHint(first, None, cancels=True)

        held = instance("w2")
        other.create_instance(held)
        other.release_instance(held.instance_id, "w2")  # released: claimable by anyone
        assert hints.get(timeout=10) == ChangeHint(first, None, runnable=True)
        assert hints.empty()  # one hint per change, none for the writes in between
    finally:
        watch.stop()


def test_a_burst_of_messages_is_one_hint_with_the_newest_id(
    pg_store: PostgresStore, other: PostgresStore
) -> None:
    hints: Hints = queue.Queue()
    watch = pg_store.watch(hints.put, 0.5)  # a long coalescing window
    try:
        hints.get(timeout=10)
        ids = [other.publish(_message(f"m{n}")) for n in range(20)]
        hint = hints.get(timeout=10)
        while hint.last_message_id < ids[-1]:  # a slow machine may split the burst
            hint = hints.get(timeout=10)
        assert hint == ChangeHint(ids[-1], None)
    finally:
        watch.stop()


def test_the_watcher_reconnects_and_catches_up_after_a_restart(
    pg_store: PostgresStore, other: PostgresStore, postgres_server: PostgresServer
) -> None:
    hints, watch = _watching(pg_store)
    try:
        postgres_server.restart()
        # notifications sent while it reconnected are lost: it reports a catch-up hint
        caught_up = hints.get(timeout=30)
        assert caught_up.runnable and caught_up.cancels
        newest = other.publish(_message("after"))
        assert hints.get(timeout=10) == ChangeHint(newest, None)
    finally:
        watch.stop()
