"""A transaction on a loop connection in libpq's pipeline mode, each batch one write.

psycopg's own pipeline (``AsyncConnection.pipeline()``) flushes the socket after every
statement it queues, so a batch of six statements is six writes: on a small VM each
write to a loopback socket wakes the server's backend, which runs on the same two vCPUs
— about a third of a millisecond each, and the bulk of a wake-up's time. :class:`Pipeline`
queues a whole batch in libpq's buffer and writes it once, with its sync, then reads the
answers; psycopg still adapts the arguments and the rows (its ``Transformer``, as a
cursor does) and its error classes are the ones raised. Every statement is prepared by
name once per connection (``LoopConnection.name_for``).

A statement that fails aborts the rest of its batch (PostgreSQL skips them until the
sync) and its error is raised; the transaction is then failed, and the loop calls close
the connection rather than keep it (``aio.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import pq
from psycopg.adapt import PyFormat, Transformer
from psycopg.errors import error_from_result
from psycopg.waiting import WAIT_R, WAIT_W

from romancy_nb.store.postgres.prepared import LoopConnection, numbered, socket_ready

Rows = list[tuple[Any, ...]]


class Pipeline:
    """One transaction: :meth:`send` batches, the last one with ``commit``; see the module."""

    def __init__(self, on: LoopConnection, *prelude: str) -> None:
        self._on = on
        self._pgconn = on.connection.pgconn
        self._transformer = Transformer(on.connection)
        self._wanted: list[bool] = []
        """Per query queued in this batch: whether the caller reads its rows."""
        self._new: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        """The statements prepared by this batch (known to the connection once it ran)."""
        self._pgconn.enter_pipeline_mode()
        for command in ("BEGIN", *prelude):
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
        self._pgconn.pipeline_sync()
        await self._flush()
        return self._answers(await self._results())

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

    async def _flush(self) -> None:
        while self._pgconn.flush() == 1:  # the socket's buffer is full: wait to write
            await socket_ready(self._pgconn.socket, WAIT_W)

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
            elif result.status == pq.ExecStatus.PIPELINE_SYNC:
                return queries
            else:
                current.append(result)

    def _answers(self, queries: list[list[pq.abc.PGresult]]) -> list[Rows]:
        wanted, self._wanted = self._wanted, []
        new, self._new = self._new, {}
        for results in queries:
            for result in results:
                if result.status == pq.ExecStatus.FATAL_ERROR:
                    raise error_from_result(result, self._on.connection.info.encoding)
        self._on.names.update(new)
        rows: list[Rows] = []
        transformer = self._transformer
        for read, results in zip(wanted, queries, strict=True):
            if read:
                result = results[-1]
                transformer.set_pgresult(result)
                rows.append(transformer.load_rows(0, result.ntuples, tuple))
        return rows


__all__ = ["Pipeline", "Rows"]
