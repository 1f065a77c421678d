"""Fixtures shared by the whole suite: a fresh, empty database per test, on every backend.

A test that touches a store asks for ``store_url`` (or ``app``, built on it): it then runs
once per backend in ``BACKENDS``, and its id names the backend (``test_x[sqlite]``). A test
that needs SQLite itself (it opens the file with apsw, uses a pragma, a VFS, the file's
mode) takes ``db_path``, the file of that same database, and is marked
``@pytest.mark.sqlite_only``: ``pytest -m sqlite_only`` lists what a new backend does not
cover. A backend that is missing fails its tests; nothing is skipped.

PostgreSQL runs on a private server that the session starts on first use
(tests/postgres_server.py; ``postgres_server`` for a test that restarts it), one new
database per test. User tables that tests read back are written with tests/sql.py, whose
``?`` placeholders and ledger tables work on both backends.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import romancy_nb as rn
from romancy_nb.store import Store
from tests.postgres_server import PostgresServer, shared_server, shutdown_shared
from tests.sql import postgres_rows, sqlite_rows

FAST_RETRY = rn.RetryPolicy.fixed(3, 0.001)
"""Three quick attempts, so retry tests do not sleep the default 1 s / 2 s / 4 s."""

Rows = list[tuple[Any, ...]]
TableReader = Callable[[str], Rows]
"""``table_rows``: reads a user table of the test's database by name."""


@dataclass(frozen=True)
class Backend:
    """A store backend the suite runs on, and the two things a test needs from outside it."""

    name: str
    new_database: Callable[[Path], str]
    """A fresh, empty database for one test, as the URL ``rn.App`` and ``open_store``
    take (``tmp_path`` is the test's own folder). Fails, never skips, if the backend's
    server cannot be reached."""
    rows: Callable[[str, str], Rows]
    """``rows(url, table)``: a user table written through ``ctx.session``, read from a
    connection of its own, in the order the rows were written (none before the table
    exists)."""


def _sqlite_database(tmp_path: Path) -> str:
    """A file of the test's own folder, created by the first open."""
    return str(tmp_path / "romancy.db")


_databases = itertools.count()


def _postgres_database(tmp_path: Path) -> str:
    """A new database on the session's private server, named after the test's folder."""
    import psycopg  # only the PostgreSQL runs need it

    server = shared_server()
    server.start()  # a test that took the server away and failed left it stopped
    slug = re.sub(r"[^a-z0-9_]", "_", tmp_path.name.lower())
    name = f"t{next(_databases):04d}_{slug}"[:63]
    with psycopg.connect(server.url, autocommit=True, connect_timeout=10) as connection:
        # FILE_COPY: the template is tiny and fsync is off, so a copy beats WAL-logging it.
        connection.execute(f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')
    return server.url_for(name)


BACKENDS = {
    backend.name: backend
    for backend in [
        Backend("sqlite", _sqlite_database, sqlite_rows),
        Backend("postgres", _postgres_database, postgres_rows),
    ]
}
"""Every backend the suite runs on; a new one is one more entry here."""


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """The session's private PostgreSQL server (started on first use), for a test that
    stops, starts or restarts it under running workers. Later tests find it running."""
    return shared_server()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the private PostgreSQL server and delete its folder, failed tests or not
    (an interrupted session: ``atexit`` in tests/postgres_server.py)."""
    shutdown_shared()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test that uses a database once per backend (``sqlite_only``: on SQLite)."""
    if "backend" in metafunc.fixturenames:
        only_sqlite = metafunc.definition.get_closest_marker("sqlite_only") is not None
        names = ["sqlite"] if only_sqlite else list(BACKENDS)
        metafunc.parametrize("backend", names, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Backend:
    backend: Backend = BACKENDS[request.param]
    return backend


@pytest.fixture
def store_url(backend: Backend, tmp_path: Path) -> str:
    """The URL of a fresh, empty database of this test, on its backend."""
    return backend.new_database(tmp_path)


@pytest.fixture
def db_path(request: pytest.FixtureRequest, backend: Backend, store_url: str) -> Path:
    """The SQLite file of this test's database, for a test that needs SQLite itself."""
    if backend.name != "sqlite":
        pytest.fail(f"{request.node.nodeid} opens the SQLite file: mark it sqlite_only")
    return Path(store_url)


@pytest.fixture
def table_rows(backend: Backend, store_url: str) -> TableReader:
    """``table_rows(table)``: a user table of this test's database (see ``Backend.rows``)."""
    return functools.partial(backend.rows, store_url)


def count_rows(store: Store, table: str, **where: Any) -> int:
    """How many rows of one of the store's tables match ``where``, through the protocol."""
    found = store.read_table(table, where)
    assert found is not None, f"the store has no table {table!r}"
    return len(found.rows)


@pytest.fixture
async def app(store_url: str) -> AsyncIterator[rn.App]:
    async with rn.App(store_url, default_retry=FAST_RETRY) as app:
        yield app
