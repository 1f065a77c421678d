"""A transaction written once as a conversation (``store/postgres/conversation.py``) gives
the same answer, and commits or rolls back the same, from a thread's pooled connection
and from the event loop's async connection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from romancy_nb.store.postgres.connections import Connections
from romancy_nb.store.postgres.conversation import (
    Batch,
    Conversation,
    Read,
    Write,
    in_pipeline,
    on_the_loop,
)
from romancy_nb.store.postgres.pipeline import LoopConnection


@pytest.fixture
def connections(pg_url: str) -> Any:
    pool = Connections(pg_url, min_size=1, max_size=2, connect_timeout=2)
    pool.write("CREATE TABLE notes (id BIGINT PRIMARY KEY, text TEXT NOT NULL)")
    yield pool
    pool.close()


def in_a_thread(connections: Connections, conversation: Callable[[], Conversation[Any]]) -> Any:
    return connections.pipelined(lambda db: in_pipeline(db, conversation()), generic=True)


def on_a_loop(url: str, conversation: Callable[[], Conversation[Any]]) -> Any:
    async def talk() -> Any:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
            return await on_the_loop(LoopConnection(connection), conversation())

    return asyncio.run(talk())


DRIVERS = ["a thread", "the loop"]


def drive(how: str, connections: Connections, url: str, conversation: Any) -> Any:
    return (
        in_a_thread(connections, conversation)
        if how == "a thread"
        else on_a_loop(url, conversation)
    )


def note_then_count(first: int, text: str) -> Conversation[tuple[int, list[str]]]:
    """Two round trips: the second batch depends on what the first read."""
    (free,) = yield Batch(
        (Read("SELECT coalesce(max(id), 0) + 1 FROM notes WHERE id >= %s", (first,)),)
    )
    new_id = free[0][0]
    count, texts = yield Batch(
        (
            Write("INSERT INTO notes VALUES (%s, %s)", (new_id, text)),
            Read("SELECT count(*) FROM notes"),
            Read("SELECT text FROM notes ORDER BY id"),
        ),
        commit=True,
    )
    return count[0][0], [row[0] for row in texts]


@pytest.mark.parametrize("how", DRIVERS)
def test_a_conversation_reads_between_batches_and_commits(
    how: str, connections: Connections, pg_url: str
) -> None:
    assert drive(how, connections, pg_url, lambda: note_then_count(1, "a")) == (1, ["a"])
    assert drive(how, connections, pg_url, lambda: note_then_count(1, "b")) == (2, ["a", "b"])


def found_nothing() -> Conversation[str]:
    """Returns without a committing batch: what it wrote is committed after it."""
    yield Batch((Write("INSERT INTO notes VALUES (10, 'kept')"),))
    return "nothing to read"


@pytest.mark.parametrize("how", DRIVERS)
def test_a_conversation_that_returns_early_is_committed(
    how: str, connections: Connections, pg_url: str
) -> None:
    assert drive(how, connections, pg_url, found_nothing) == "nothing to read"
    assert connections.rows("SELECT text FROM notes") == [("kept",)]


def fails_halfway() -> Conversation[None]:
    yield Batch((Write("INSERT INTO notes VALUES (20, 'rolled back')"),))
    yield Batch((Write("INSERT INTO notes VALUES (20, 'the same id')"),), commit=True)


@pytest.mark.parametrize("how", DRIVERS)
def test_a_failing_statement_rolls_the_whole_conversation_back(
    how: str, connections: Connections, pg_url: str
) -> None:
    with pytest.raises(Exception, match="notes_pkey"):
        drive(how, connections, pg_url, fails_halfway)
    assert connections.rows("SELECT count(*) FROM notes") == [(0,)]


def goes_on_after_committing() -> Conversation[None]:
    yield Batch((Write("INSERT INTO notes VALUES (30, 'x')"),), commit=True)
    yield Batch((Read("SELECT 1"),))


@pytest.mark.parametrize("how", DRIVERS)
def test_a_conversation_must_end_at_its_committing_batch(
    how: str, connections: Connections, pg_url: str
) -> None:
    with pytest.raises(RuntimeError, match="went on after its committing batch"):
        drive(how, connections, pg_url, goes_on_after_committing)


def sleeps() -> Conversation[None]:
    yield Batch((Read("SELECT pg_sleep(0.3)"), Read("SELECT 1")), commit=True)


def test_a_connection_lost_mid_conversation_raises_on_the_loop(
    connections: Connections, pg_url: str
) -> None:
    async def talk() -> None:
        connection = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
        pid = connection.info.backend_pid
        try:
            talking = asyncio.ensure_future(on_the_loop(LoopConnection(connection), sleeps()))
            await asyncio.sleep(0.1)
            connections.rows("SELECT pg_terminate_backend(%s)", (pid,))
            await talking
        finally:
            connection.pgconn.finish()

    with pytest.raises(psycopg.OperationalError):
        asyncio.run(talk())
