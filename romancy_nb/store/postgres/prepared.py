"""The per-step statement sent with libpq's own calls, from the event loop (``aio.py``).

``AsyncConnection.execute`` costs about 120 µs of CPU per statement on two small vCPUs,
half of it psycopg's general machinery: a cursor, the adapters dumping each argument,
and ``wait_async`` arming a timer and polling the socket for writing around every wait.
A durable step needs none of it — one statement with a fixed shape, whose arguments are
``str``, ``int``, ``float`` or ``None`` — so :func:`execute` prepares it once per
connection (a named server-side statement), sends its arguments as text, and waits on
the socket with one future: about 65 µs (the same statement, the same loopback server).
psycopg still does the protocol — its C generators (``psycopg.generators``) send and read
the messages on its ``pq`` connection — and its error classes are the ones raised.

Text arguments cannot carry a NUL character (libpq reads them as C strings): an
argument with one is refused here (:class:`NotAsText`) and the caller sends the
statement the general way, where psycopg refuses it with its own error, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import generators, pq
from psycopg.errors import error_from_result
from psycopg.rows import TupleRow
from psycopg.waiting import READY_R, READY_W, WAIT_R, WAIT_W, Ready, Wait

AsyncConnection = psycopg.AsyncConnection[TupleRow]

TEXT, INT8, FLOAT8 = 25, 20, 701
"""The type oids a statement's parameters are declared with (``pg_type``)."""


class NotAsText(ValueError):
    """An argument that cannot be sent as text (a ``str`` with a NUL character, or a type
    with no text form here): send the statement the general way."""


def numbered(sql: str, count: int) -> bytes:
    """``sql`` with ``$1``, ``$2``... in place of its ``count`` ``%s`` (what the server
    prepares)."""
    head, *rest = sql.split("%s")
    if len(rest) != count:
        raise ValueError(f"{len(rest)} placeholders, {count} types: {sql[:60]!r}")
    return (head + "".join(f"${i}{part}" for i, part in enumerate(rest, 1))).encode()


@dataclass(frozen=True)
class Statement:
    """A statement with ``%s`` placeholders and the types of its parameters."""

    sql: str
    types: tuple[int, ...]

    @property
    def numbered(self) -> bytes:
        return numbered(self.sql, len(self.types))


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


def as_text(values: Sequence[Any]) -> list[bytes | None]:
    """The arguments as libpq text parameters (UTF-8: the loop connections' encoding)."""
    out: list[bytes | None] = []
    for value in values:
        if value is None:
            out.append(None)
        elif isinstance(value, str):
            if "\x00" in value:
                raise NotAsText("a NUL character")
            out.append(value.encode())
        elif isinstance(value, bool):  # an int, but its text form is not one
            raise NotAsText("a bool")
        elif isinstance(value, int | float):
            out.append(repr(value).encode())  # repr: the shortest text that round-trips
        else:
            raise NotAsText(type(value).__name__)
    return out


async def execute(on: LoopConnection, statement: Statement, values: Sequence[Any]) -> int:
    """Run ``statement`` with ``values`` on ``on``; the number of rows it changed. Raises
    :class:`NotAsText` before sending anything, or psycopg's error for the server's."""
    params = as_text(values)
    pgconn = on.connection.pgconn
    key = (statement.numbered, statement.types)
    name = on.names.get(key)
    if name is None:
        name = on.new_name()
        pgconn.send_prepare(name, key[0], param_types=statement.types)
        _check(await _results(pgconn))
        on.names[key] = name
    pgconn.send_query_prepared(name, params)
    return _check(await _results(pgconn)).command_tuples or 0


async def _results(pgconn: pq.abc.PGconn) -> pq.abc.PGresult:
    results: list[pq.abc.PGresult] = await _wait(generators.execute(pgconn), pgconn.socket)
    return results[-1]


def _check(result: pq.abc.PGresult) -> pq.abc.PGresult:
    if result.status != pq.ExecStatus.COMMAND_OK:
        raise error_from_result(result)
    return result


async def _wait(gen: Any, fileno: int) -> Any:
    """Drive a psycopg protocol generator: wait on the socket for what it asks."""
    try:
        wanted: Wait = next(gen)
        while True:
            wanted = gen.send(await socket_ready(fileno, wanted))
    except StopIteration as done:
        return done.value


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


__all__ = [
    "FLOAT8",
    "INT8",
    "TEXT",
    "LoopConnection",
    "NotAsText",
    "Statement",
    "execute",
    "numbered",
    "socket_ready",
]
