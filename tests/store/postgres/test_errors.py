"""What the PostgreSQL store raises when the server is away, refuses us, or a statement is
wrong: transient errors (the engine retries) only for what may pass by itself."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest

from romancy_nb.errors import DatabaseLockedError, StoreError, StoreUnavailableError
from romancy_nb.store import open_store
from romancy_nb.store.postgres.store import PostgresStore
from tests.postgres_server import PostgresServer
from tests.store.postgres.records import instance, step

T = TypeVar("T")


def test_a_stopped_server_is_unavailable_and_the_store_recovers_when_it_is_back(
    pg_store: PostgresStore, postgres_server: PostgresServer
) -> None:
    record = instance("me")
    assert pg_store.create_instance(record)
    postgres_server.stop()
    try:
        # the pooled connection died with the server: the first call sees it go, and so
        # does every call until the server is back (no connection to get)
        for _ in range(3):
            with pytest.raises(StoreUnavailableError) as away:
                pg_store.get_instance(record.instance_id)
            assert away.value.transient
            assert pg_store.where in str(away.value)
        with pytest.raises(StoreUnavailableError):
            pg_store.record_step(step(record.instance_id, 1), "me")
    finally:
        postgres_server.start()
    # back: the engine retries until the pool has reconnected (its backoff is short)
    assert _retried(lambda: pg_store.get_instance(record.instance_id)) == record
    for _ in range(5):  # and from then on every call works: no broken connection is reused
        assert pg_store.get_instance(record.instance_id) == record
    assert pg_store.record_step(step(record.instance_id, 1), "me")


def _retried(call: Callable[[], T], attempts: int = 10) -> T:
    """``call()``, tried again on a transient error as the engine's gate does."""
    for _ in range(attempts - 1):
        try:
            return call()
        except StoreError as error:
            if not error.transient:
                raise
    return call()


def test_a_session_whose_server_went_away_is_unavailable(
    pg_store: PostgresStore, postgres_server: PostgresServer
) -> None:
    record = instance("me")
    pg_store.create_instance(record)
    session = pg_store.open_session()
    session.connection.execute("CREATE TABLE ledger (n INT)")
    postgres_server.restart()
    with pytest.raises(StoreUnavailableError):
        session.record_step(step(record.instance_id, 1), "me")
    session.rollback()  # the broken connection goes back to the pool, which drops it
    assert pg_store.record_step(step(record.instance_id, 1), "me")
    assert pg_store.read_table("ledger") is None  # the session's writes rolled back


def test_a_missing_database_is_not_transient_and_says_what_to_do(
    pg_url: str, tmp_path: Path
) -> None:
    missing = pg_url.rsplit("/", 1)[0] + "/no_such_database"
    store = open_store(missing, connect_timeout=2)  # connects in the background: no error yet
    try:
        with pytest.raises(StoreError, match="Create it first") as refused:
            store.migrate()
        assert not refused.value.transient
        assert "no_such_database" in str(refused.value)
    finally:
        store.close()


def test_a_server_nobody_listens_on_is_unavailable_within_the_connect_timeout() -> None:
    # opening connects in the background: an App in a kernel opens while the server is
    # away, and its first call (retried by the engine) is what fails
    store = open_store("postgresql://postgres@127.0.0.1:9/romancy", connect_timeout=2)
    try:
        with pytest.raises(StoreUnavailableError, match="127.0.0.1:9") as away:
            store.get_instance("x")
        assert "password" not in str(away.value)
    finally:
        store.close()


def test_a_wrong_statement_is_not_transient(pg_store: PostgresStore) -> None:
    record = instance("me")
    pg_store.create_instance(record)
    assert pg_store.record_step(step(record.instance_id, 1), "me")
    with pytest.raises(StoreError) as clash:  # the same seq twice: a bug, never retried
        pg_store.record_step(step(record.instance_id, 1), "me")
    assert not clash.value.transient and "workflow_history" in str(clash.value)


def test_the_password_is_never_in_a_message(pg_url: str) -> None:
    with_password = pg_url.replace("postgres@", "postgres:s3cret@")
    store = open_store(with_password.rsplit("/", 1)[0] + "/missing_db", connect_timeout=2)
    try:
        with pytest.raises(StoreError) as failed:
            store.migrate()
        assert "s3cret" not in str(failed.value)
    finally:
        store.close()


def test_psycopg_is_what_sessions_hand_out(pg_store: PostgresStore) -> None:
    session = pg_store.open_session()
    try:
        assert isinstance(session.connection, psycopg.Connection)
        assert session.connection.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    finally:
        session.rollback()


def test_a_session_on_the_event_loop_does_not_wait_for_a_busy_pool(pg_url: str) -> None:
    store = PostgresStore(pg_url, min_size=1, max_size=1)
    try:
        store.migrate()
        held = store.open_session()  # the pool's only connection
        with pytest.raises(DatabaseLockedError, match="every pooled connection is in use"):
            store.open_session(wait=False)
        held.rollback()
        store.open_session(wait=False).rollback()  # free again: taken at once
    finally:
        store.close()
