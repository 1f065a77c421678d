"""A transaction written once, as a conversation, and sent from a thread or from the loop.

Some transactions are on the path of every wake-up (``wake``, ``message_wakeups``), and
the engine makes them from its event loop when it can (``aio.py``), from a thread when
not. Rather than writing each twice, blocking and async, a transaction is a generator —
a *conversation* — that yields :class:`Batch` es of statements and is sent back the rows
of each batch's :class:`Read` s; what it returns is the transaction's answer. A batch is
one round trip: its statements travel together in pipeline mode (psycopg's from a
thread, :class:`~romancy_nb.store.postgres.pipeline.Pipeline` on the loop), after the
``BEGIN`` and, with the last batch, the ``COMMIT``; the next batch can depend on what the
previous one read. A conversation that returns without a committing batch is
committed after it (one more round trip, on a path that found nothing to do).

Every statement is prepared at its first use on a connection and planned once for any
parameters (``plan_cache_mode = force_generic_plan`` for the transaction), as
``Connections.pipelined``'s ``generic`` explains: only for statements whose best plan does
not depend on their values.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg.rows import TupleRow

from romancy_nb.store.postgres.connections import GENERIC_PLANS, Connection
from romancy_nb.store.postgres.pipeline import LoopConnection, Pipeline, Rows

T = TypeVar("T")


@dataclass(frozen=True)
class Read:
    """A statement whose rows the conversation is sent back."""

    sql: str
    args: Sequence[Any] = ()


@dataclass(frozen=True)
class Write:
    """A statement whose rows, if any, nobody reads."""

    sql: str
    args: Sequence[Any] = ()


@dataclass(frozen=True)
class Batch:
    """Statements sent together, in order; ``commit``: the transaction's last."""

    statements: tuple[Read | Write, ...]
    commit: bool = False


Conversation = Generator[Batch, list[Rows], T]
"""Yields batches, is sent the rows of each batch's reads (in order), returns the answer."""


def _ended(conversation: Conversation[T], rows: list[Rows]) -> T:
    """Send the committed batch's rows: the conversation must end there."""
    try:
        conversation.send(rows)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise RuntimeError("a conversation went on after its committing batch")


def in_pipeline(connection: Connection, conversation: Conversation[T]) -> Callable[[], T]:
    """Converse on a blocking connection in a transaction in pipeline mode: the ``work``
    of ``Connections.pipelined``, which sends the ``COMMIT`` after it and then calls the
    function returned — a committing batch's reads are fetched after that ``COMMIT``."""
    try:
        batch = next(conversation)
        while not batch.commit:
            batch = conversation.send([c.fetchall() for c in _send(connection, batch)])
    except StopIteration as done:
        answer: T = done.value
        return lambda: answer
    cursors = _send(connection, batch)
    return lambda: _ended(conversation, [c.fetchall() for c in cursors])


def _send(connection: Connection, batch: Batch) -> list[psycopg.Cursor[TupleRow]]:
    cursors = []
    for statement in batch.statements:
        cursor = connection.execute(statement.sql, statement.args, prepare=True)
        if isinstance(statement, Read):
            cursors.append(cursor)
    return cursors


async def on_the_loop(on: LoopConnection, conversation: Conversation[T]) -> T:
    """Converse on a loop connection (in autocommit), as one transaction: each batch is
    one write and one round trip (``pipeline.py``)."""
    pipeline = Pipeline(on, "BEGIN", GENERIC_PLANS)
    try:
        batch = next(conversation)
        while True:
            statements = [(s.sql, s.args, isinstance(s, Read)) for s in batch.statements]
            rows = await pipeline.send(statements, commit=batch.commit)
            if batch.commit:
                return _ended(conversation, rows)
            batch = conversation.send(rows)
    except StopIteration as done:
        await pipeline.send((), commit=True)
        answer: T = done.value
        return answer
    finally:
        pipeline.close()


__all__ = ["Batch", "Conversation", "Read", "Rows", "Write", "in_pipeline", "on_the_loop"]
