"""Migrations on PostgreSQL: many workers starting at once apply each migration once."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from romancy_nb.errors import StoreError
from romancy_nb.store import open_store
from romancy_nb.store.postgres import schema

_START = multiprocessing.get_context("spawn")


def _migrate(url: str, ready: threading.Barrier | None = None) -> list[str]:
    store = open_store(url)
    try:
        if ready is not None:
            ready.wait()
        return store.migrate()
    finally:
        store.close()


def _migrate_in_process(url: str, start: object, results: object) -> None:
    start.wait()  # type: ignore[attr-defined]
    results.put(_migrate(url))  # type: ignore[attr-defined]


def _recorded(url: str) -> list[str]:
    with psycopg.connect(url) as connection:
        return [
            row[0] for row in connection.execute("SELECT version FROM schema_migrations ORDER BY 1")
        ]


def _versions() -> list[str]:
    return [m.version for m in schema.shipped()]


def test_four_processes_migrating_at_once_apply_each_migration_once(pg_url: str) -> None:
    start = _START.Event()
    results = _START.Queue()
    workers = [
        _START.Process(target=_migrate_in_process, args=(pg_url, start, results)) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    start.set()
    applied = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    # one process applied everything; the others waited for the lock and found it done
    assert sorted(applied, key=len) == [[], [], [], _versions()]
    assert _recorded(pg_url) == _versions()


def test_four_threads_migrating_at_once_apply_each_migration_once(pg_url: str) -> None:
    ready = threading.Barrier(4)
    with ThreadPoolExecutor(4) as pool:
        applied = list(pool.map(lambda _: _migrate(pg_url, ready), range(4)))
    assert sorted(applied, key=len) == [[], [], [], _versions()]
    assert _recorded(pg_url) == _versions()
    assert _migrate(pg_url) == []  # and a later start finds nothing to do


def test_a_failing_migration_records_nothing(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as connection:
        connection.execute("CREATE TABLE workers (taken TEXT)")  # the first table: a clash
    store = open_store(pg_url)
    try:
        with pytest.raises(StoreError, match="nothing of it was applied") as failed:
            store.migrate()
    finally:
        store.close()
    assert not failed.value.transient and '"workers" already exists' in str(failed.value)
    with psycopg.connect(pg_url) as connection:
        found = connection.execute(
            "SELECT to_regclass('workflow_instances'), to_regclass('schema_migrations')"
        ).fetchone()
    assert found == (None, None)
