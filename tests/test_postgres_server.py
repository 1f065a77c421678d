"""The test infrastructure for PostgreSQL: the private server, its databases, the ledgers.

The engine suite on PostgreSQL trusts these parts; they are checked here on their own,
without the store, so a failure points at the fixture and not at the backend.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import apsw
import psycopg
import pytest

from romancy_nb.testing import wait_until
from tests import postgres_server as pg
from tests.conftest import BACKENDS, Backend, TableReader
from tests.sql import append_row, create_ledger, execute, postgres_rows


def test_the_server_answers_with_the_test_settings(postgres_server: pg.PostgresServer) -> None:
    with psycopg.connect(postgres_server.url, autocommit=True) as connection:
        settings = {
            name: connection.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("max_connections", "fsync", "listen_addresses", "port")
        }
    assert settings == {
        "max_connections": "300",
        "fsync": "off",
        "listen_addresses": "127.0.0.1",
        "port": str(postgres_server.port),
    }


@pytest.fixture
def pg_url(tmp_path: Path) -> str:
    """A new database of the private server, for the tests of the server itself."""
    return BACKENDS["postgres"].new_database(tmp_path)


def test_a_restart_drops_the_sessions_and_keeps_the_data_and_port(
    postgres_server: pg.PostgresServer, pg_url: str
) -> None:
    port = postgres_server.port
    with psycopg.connect(pg_url, autocommit=True) as connection:
        connection.execute("CREATE TABLE kept (n INT)")
        connection.execute("INSERT INTO kept VALUES (7)")
        postgres_server.restart()
        with pytest.raises(psycopg.OperationalError):
            connection.execute("SELECT 1")
    assert postgres_server.port == port
    with psycopg.connect(pg_url, autocommit=True) as connection:
        assert connection.execute("SELECT n FROM kept").fetchall() == [(7,)]


def test_a_stopped_server_is_started_for_the_next_database(
    postgres_server: pg.PostgresServer, tmp_path: Path
) -> None:
    postgres_server.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres_server.url, connect_timeout=5)
    url = BACKENDS["postgres"].new_database(tmp_path)
    with psycopg.connect(url) as connection:
        assert connection.execute("SELECT 1").fetchall() == [(1,)]


def test_each_test_gets_a_new_empty_database(tmp_path: Path) -> None:
    new = BACKENDS["postgres"].new_database
    first, second = new(tmp_path), new(tmp_path)
    assert first != second
    for url in (first, second):
        with psycopg.connect(url) as connection:
            tables = connection.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()"
            ).fetchall()
            assert tables == []


def test_missing_binaries_fail_with_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(pg, "BINARY_ROOTS", (tmp_path / "none",))
    monkeypatch.setenv("ROMANCY_PG_BIN", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pg.PostgresMissingError, match="apt-get install postgresql"):
        pg.find_binaries()


SESSION = """
import sys, time
from tests.postgres_server import launch
server = launch()
pid = (server.data / "postmaster.pid").read_text().split()[0]
print(server.folder, pid, flush=True)
time.sleep(600)
"""


def test_a_killed_session_leaves_no_server_behind() -> None:
    """SIGKILL runs no atexit handler: the watchdog stops the server and removes its folder."""
    session = subprocess.Popen([sys.executable, "-c", SESSION], stdout=subprocess.PIPE, text=True)
    try:
        assert session.stdout is not None
        folder, pid = session.stdout.readline().split()
        assert Path(folder, "data").is_dir()
        os.kill(int(pid), 0)  # the server is up
    finally:
        session.kill()
        session.wait()

    def gone() -> bool:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return not Path(folder).exists()
        return False

    wait_until(gone, message="the watchdog stopping the server and removing its folder")


def _connect(backend: Backend, url: str) -> Any:
    """A raw connection, as ``ctx.session`` is one, outside any transaction."""
    if backend.name == "sqlite":
        return apsw.Connection(url)
    return psycopg.connect(url, autocommit=True)


def test_ledger_rows_come_back_in_the_order_written(
    backend: Backend, store_url: str, table_rows: TableReader
) -> None:
    connection = _connect(backend, store_url)
    try:
        assert table_rows("ledger") == []  # before the table exists
        for n, word in [(3, "c"), (1, "a"), (2, "b")]:
            execute(connection, "BEGIN")
            append_row(connection, "ledger", "n INT, word TEXT", (n, word))
            execute(connection, "COMMIT")
        execute(connection, "BEGIN")
        append_row(connection, "ledger", "n INT, word TEXT", (9, "rolled back"))
        execute(connection, "ROLLBACK")
        execute(connection, "UPDATE ledger SET word = ? WHERE n = ?", ("A", 1))
    finally:
        connection.close()
    assert table_rows("ledger") == [(3, "c"), (1, "A"), (2, "b")]


def _waiting_for_a_lock(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as connection:
        found = connection.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return found is not None and found[0] > 0


def test_two_transactions_may_create_the_same_ledger_at_once(pg_url: str) -> None:
    """Without the creator's advisory lock the second CREATE TABLE IF NOT EXISTS waits on
    the catalog and then fails with a unique violation when the first commits."""
    first = psycopg.connect(pg_url)
    second = psycopg.connect(pg_url)
    failures: list[BaseException] = []

    def create_in_second() -> None:
        try:
            append_row(second, "ledger", "who TEXT", ("second",))
            second.commit()
        except BaseException as error:
            failures.append(error)

    try:
        create_ledger(first, "ledger", "who TEXT")  # psycopg: inside a transaction
        other = threading.Thread(target=create_in_second)
        other.start()
        wait_until(lambda: _waiting_for_a_lock(pg_url), message="the second creator waiting")
        append_row(first, "ledger", "who TEXT", ("first",))
        first.commit()
        other.join()
    finally:
        first.close()
        second.close()
    assert failures == []
    assert postgres_rows(pg_url, "ledger") == [("first",), ("second",)]
