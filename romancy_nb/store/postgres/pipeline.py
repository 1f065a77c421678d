"""Statements sent from the event loop with libpq's own calls, a batch in one write.

The loop calls (``aio.py``) make the per-step statement and the wake-ups' transactions
on async connections of their own. psycopg's ``AsyncConnection.execute`` costs about
120 µs of CPU per statement on two small vCPUs (a cursor, ``wait_async`` arming a timer
around every wait...), and its pipeline (``AsyncConnection.pipeline()``) flushes the
socket after every statement it queues, so a batch of six statements is six writes: each
write to a loopback socket wakes the server's backend, which runs on the same vCPUs —
the bulk of a wake-up's time. :class:`Pipeline` queues a whole batch in libpq's buffer
(its pipeline mode) and writes it once, with its sync, then reads the answers, waiting
on the socket with one future. psycopg still does everything else: its C generators and
``pq`` connection speak the protocol, its ``Transformer`` adapts the arguments and the
rows as a cursor does, and its error classes are the ones raised. Every statement is
prepared by name once per connection (:class:`LoopConnection`).

A statement that fails aborts the rest of its batch (PostgreSQL skips them until the
sync) and its error is raised; in a transaction, the loop calls then close the
connection rather than keep it (``aio.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer
from psycopg.errors import error_from_result
from psycopg.rows import TupleRow
from psycopg.waiting import READY_R, READY_W, WAIT_R, WAIT_W, Ready, Wait

AsyncConnection = psycopg.AsyncConnection[TupleRow]
Rows = list[tuple[Any, ...]]


@dataclass(eq=False)  # one per connection: compared by identity
class LoopConnection:
    """An async connection of the loop calls, and the statements prepared on it."""

    connection: AsyncConnection
    names: dict[tuple[bytes, tuple[int, ...]], bytes] = field(default_factory=dict)
    """The name of each statement prepared on it, by its SQL and parameter types."""
    _made: int = 0

    def new_name(self) -> bytes:
        """A name no statement of this connection has (recorded in :attr:`names` once
        the statement is prepared)."""
        self._made += 1
        return f"romancy_{self._made}".encode()


def numbered(sql: str, count: int) -> bytes:
    """``sql`` with ``$1``, ``$2``... in place of its ``count`` ``%s`` (what the server
    prepares)."""
    head, *rest = sql.split("%s")
    if len(rest) != count:
        raise ValueError(f"{len(rest)} placeholders for {count} arguments: {sql[:60]!r}")
    return (head + "".join(f"${i}{part}" for i, part in enumerate(rest, 1))).encode()


class Pipeline:
    """One transaction: :meth:`send` batches, the last one with ``commit``; see the module."""

    def __init__(self, on: LoopConnection, *prelude: str) -> None:
        """``prelude``: commands sent with the first batch (``BEGIN``...); without a
        ``BEGIN`` each batch is a transaction of its own (the sync ends it)."""
        self._on = on
        self._pgconn = on.connection.pgconn
        self._transformer = Transformer(on.connection)
        self._wanted: list[bool] = []
        """Per query queued in this batch: whether the caller reads its rows."""
        self._new: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        """The statements prepared by this batch (known to the connection once it ran)."""
        self._pgconn.enter_pipeline_mode()
        for command in prelude:
            self._command(command)

    def close(self) -> None:
        """Leave pipeline mode once the transaction has ended (after a failure the
        connection is closed, and with it the mode)."""
        idle = self._on.connection.info.transaction_status == pq.TransactionStatus.IDLE
        if idle and self._pgconn.pipeline_status != pq.PipelineStatus.OFF:
            self._pgconn.exit_pipeline_mode()

    async def send(
        self, statements: Sequence[tuple[str, Sequence[Any], bool]], commit: bool
    ) -> list[Rows]:
        """Send ``statements`` (SQL with ``%s``, arguments, whether its rows are read)
        and, with ``commit``, the ``COMMIT``, in one write; the rows of those read."""
        for sql, args, read in statements:
            self._statement(sql, args, read)
        if commit:
            self._command("COMMIT")
        transformer = self._transformer
        rows: list[Rows] = []
        for result in await self._round_trip():
            transformer.set_pgresult(result)
            rows.append(transformer.load_rows(0, result.ntuples, tuple))
        return rows

    async def result(self, sql: str, args: Sequence[Any]) -> pq.abc.PGresult:
        """Send one statement; its result (its rows, how many rows it changed)."""
        self._statement(sql, args, True)
        (result,) = await self._round_trip()
        return result

    def _command(self, sql: str) -> None:
        self._pgconn.send_query_params(sql.encode(), None)
        self._wanted.append(False)

    def _statement(self, sql: str, args: Sequence[Any], read: bool) -> None:
        transformer = self._transformer
        params = transformer.dump_sequence(args, [PyFormat.TEXT] * len(args))
        types = tuple(transformer.types or ())
        key = (numbered(sql, len(types)), types)
        name = self._on.names.get(key) or self._new.get(key)
        if name is None:
            name = self._new[key] = self._on.new_name()
            self._pgconn.send_prepare(name, key[0], param_types=types)
            self._wanted.append(False)
        self._pgconn.send_query_prepared(name, params)
        self._wanted.append(read)

    async def _round_trip(self) -> list[pq.abc.PGresult]:
        """Sync, write what is queued, read up to the sync; the result of each read."""
        self._pgconn.pipeline_sync()
        while self._pgconn.flush() == 1:  # the socket's buffer is full: wait to write
            await socket_ready(self._pgconn.socket, WAIT_W)
        queries = await self._results()
        wanted, self._wanted = self._wanted, []
        new, self._new = self._new, {}
        for results in queries:
            for result in results:
                if result.status == pq.ExecStatus.FATAL_ERROR:
                    raise error_from_result(result, self._on.connection.info.encoding)
        self._on.names.update(new)
        return [results[-1] for read, results in zip(wanted, queries, strict=True) if read]

    async def _results(self) -> list[list[pq.abc.PGresult]]:
        """Each queued query's results, up to the sync."""
        pgconn = self._pgconn
        queries: list[list[pq.abc.PGresult]] = []
        current: list[pq.abc.PGresult] = []
        while True:
            if pgconn.is_busy():
                await socket_ready(pgconn.socket, WAIT_R)
                pgconn.consume_input()
                continue
            result = pgconn.get_result()
            if result is None:  # the end of one query's results
                queries.append(current)
                current = []
                if len(queries) > len(self._wanted):  # no sync will come: never spin
                    raise psycopg.OperationalError("the server's answers ended before the sync")
            elif result.status == pq.ExecStatus.PIPELINE_SYNC:
                return queries
            else:
                current.append(result)


async def socket_ready(fileno: int, wanted: Wait) -> Ready:
    """Wait until the socket can be read or written, as ``wanted``, with one future (no
    timer: a lost server is seen by libpq and the keepalives)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[Ready] = loop.create_future()
    if wanted & WAIT_R:
        loop.add_reader(fileno, _resolve, ready, READY_R)
    if wanted & WAIT_W:
        loop.add_writer(fileno, _resolve, ready, READY_W)
    try:
        return await ready
    finally:
        if wanted & WAIT_R:
            loop.remove_reader(fileno)
        if wanted & WAIT_W:
            loop.remove_writer(fileno)


def _resolve(future: asyncio.Future[Ready], ready: Ready) -> None:
    if not future.done():
        future.set_result(ready)


async def one_statement(on: LoopConnection, sql: str, args: Sequence[Any]) -> pq.abc.PGresult:
    """One statement in a transaction of its own, prepared once per connection; its
    result (rows, and how many it changed)."""
    pipeline = Pipeline(on)
    try:
        return await pipeline.result(sql, args)
    finally:
        pipeline.close()


__all__ = ["LoopConnection", "Pipeline", "Rows", "numbered", "one_statement"]
