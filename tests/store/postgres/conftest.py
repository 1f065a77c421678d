"""Fixtures of the PostgreSQL store's own tests: a fresh database on the session's server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from romancy_nb.store.postgres.store import PostgresStore
from tests.conftest import BACKENDS


@pytest.fixture
def pg_url(tmp_path: Path) -> str:
    """A new, empty database on the session's private server."""
    return BACKENDS["postgres"].new_database(tmp_path)


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[PostgresStore]:
    """A migrated store on ``pg_url``, closed after the test."""
    store = PostgresStore(pg_url, connect_timeout=2)
    store.migrate()
    yield store
    store.close()
