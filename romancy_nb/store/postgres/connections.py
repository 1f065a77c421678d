"""The store's connections to one PostgreSQL database: a psycopg pool, and its errors.

Every connection of the pool is in autocommit mode, so a single statement is one round
trip and one transaction (a durable step is exactly that); a method that needs several
statements takes :meth:`Connections.transaction`, which brackets them in ``BEGIN`` /
``COMMIT`` on one connection and rolls back on any error. Sessions (``ctx.session``) take
a connection for the length of an activity with :meth:`Connections.take`.

The pool connects in the background: opening a store never waits on the network, and a
call made while the server is away waits at most ``connect_timeout`` for a connection,
then raises :class:`~romancy_nb.errors.StoreUnavailableError` (the engine retries it). On
such a failure one direct connection attempt tells a server that is away from one that
refuses us (a wrong password, a missing database: not worth retrying), since the pool's
own attempts only log their reason.

A connection an error broke is marked ``BAD`` by psycopg and dropped by the pool when it
is given back, never reused; after a connection loss the idle connections are checked
too (they usually died with the same server), from a thread, so the caller never waits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, NoReturn, TypeVar

import psycopg
import psycopg_pool
from psycopg import conninfo as pg_conninfo
from psycopg.rows import TupleRow

from romancy_nb.errors import DatabaseLockedError, StoreError
from romancy_nb.store.postgres.translate import is_connection_loss, translate

Connection = psycopg.Connection[TupleRow]
T = TypeVar("T")

_SERVER_ENDED_SESSION = ("57P01", "57P02")
"""admin_shutdown, crash_shutdown: see :meth:`Connections._fail_unless_stale`."""

GENERIC_PLANS = "SET LOCAL plan_cache_mode = force_generic_plan"
"""See :meth:`Connections.pipelined` (``generic``); ends with the transaction."""

_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
}
"""TCP keepalives: a connection to a server that vanished without closing it (a network
partition, a killed VM) fails within ~20 s instead of waiting for the OS's two hours."""


def describe(url: str) -> str:
    """``postgresql://user@host:port/db`` without the password: what messages name."""
    try:
        params = pg_conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as error:
        raise StoreError(f"not a PostgreSQL URL ({error}): {url.split('@')[-1]!r}") from None
    user = f"{params['user']}@" if params.get("user") else ""
    host = params.get("host") or "localhost"
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{user}{host}{port}/{params.get('dbname') or ''}"


class Connections:
    """The pool of one store and the few ways the store uses it (see the module)."""

    def __init__(self, url: str, *, min_size: int, max_size: int, connect_timeout: float) -> None:
        self.where = describe(url)
        self._url = url
        self._timeout = connect_timeout
        # libpq takes whole seconds and treats anything below 2 as 2
        self._connect_kwargs: dict[str, Any] = {
            "connect_timeout": max(2, round(connect_timeout)),
            **_KEEPALIVES,
        }
        self._pool: psycopg_pool.ConnectionPool[Connection] = psycopg_pool.ConnectionPool(
            url,
            kwargs={"autocommit": True, **self._connect_kwargs},
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout,
            # The pool retries a failed connection with a doubling delay until this many
            # seconds have passed, then starts over at the next call: a server back after
            # an outage of any length is reconnected within a few seconds.
            reconnect_timeout=max(5.0, 2 * connect_timeout),
            open=False,
            name=f"romancy {self.where}",
        )
        self._pool.open(wait=False)
        self._max_size = max_size
        self._checking = threading.Lock()

    @property
    def url(self) -> str:
        return self._url

    @property
    def connect_kwargs(self) -> dict[str, Any]:
        """What every connection of the store is opened with (timeouts, keepalives)."""
        return dict(self._connect_kwargs)

    # statements

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        for _ in self._attempts():
            try:
                with self._pool.connection() as connection:
                    return connection.execute(sql, args).fetchall()
            except psycopg.Error as error:
                self._fail_unless_stale(error)
        raise AssertionError("unreachable: the last attempt raises")

    def write(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement (its own transaction); how many rows it changed."""
        for _ in self._attempts():
            try:
                with self._pool.connection() as connection:
                    return connection.execute(sql, args).rowcount
            except psycopg.Error as error:
                self._fail_unless_stale(error)
        raise AssertionError("unreachable: the last attempt raises")

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction on one pooled connection; rolled back on any error.

        READ COMMITTED, as PostgreSQL defaults to: a method that must not race with
        others locks what it depends on (the instance row, ``FOR UPDATE``) first.
        """
        connection = self.begin()
        try:
            yield connection
            connection.execute("COMMIT")
        except BaseException as error:
            if not connection.closed:
                with suppress(psycopg.Error):
                    connection.execute("ROLLBACK")
            if isinstance(error, psycopg.Error):
                self.fail(error)
            raise
        finally:
            self.give_back(connection)

    def pipelined(
        self, work: Callable[[Connection], Callable[[], T]], *, generic: bool = False
    ) -> T:
        """One transaction in psycopg's pipeline mode: ``work(connection)`` sends its
        statements and returns how to read its answer, called once the transaction has
        committed (the cursors it reads hold their results by then).

        ``BEGIN`` travels with the first statements, and a statement whose result
        ``work`` does not read waits for the next read, or for the ``COMMIT``, and goes
        with it: a transaction costs one round trip per result it must see before it
        can go on, plus one for the rest and the commit — not one per statement.

        ``generic``: every statement is prepared at its first use on a connection and
        planned once for any parameters (``plan_cache_mode = force_generic_plan`` for this
        transaction), so a connection plans it only once. Only for statements whose best
        plan does not depend on the values (key lookups): the planner of a statement like
        ``message_wakeups`` costs more than its execution, and more than a round trip.

        Rolled back on any error. A connection the server ended before it ran anything
        (restarted) is replaced and ``work`` run again, as :meth:`begin` does: nothing of
        it ran, so it cannot run twice.
        """
        for _ in self._attempts():
            connection = self._getconn(None)
            threshold = connection.prepare_threshold
            try:
                with connection.pipeline():
                    connection.execute("BEGIN")
                    if generic:
                        connection.execute(GENERIC_PLANS)
                        connection.prepare_threshold = 0
                    read = work(connection)
                    connection.prepare_threshold = threshold
                    connection.execute("COMMIT")
                return read()
            except psycopg.Error as error:
                self._roll_back(connection)
                self._fail_unless_stale(error)
            except BaseException:
                self._roll_back(connection)
                raise
            finally:
                connection.prepare_threshold = threshold
                self.give_back(connection)
        raise AssertionError("unreachable: the last attempt raises")

    @staticmethod
    def _roll_back(connection: Connection) -> None:
        if connection.closed:
            return
        if connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            with suppress(psycopg.Error):
                connection.execute("ROLLBACK")

    def _getconn(self, timeout: float | None) -> Connection:
        """A pooled connection (see :meth:`begin` for ``timeout``)."""
        try:
            return self._pool.getconn(self._timeout if timeout is None else timeout)
        except psycopg_pool.PoolTimeout as error:
            if timeout is None:
                self.fail(error)
            raise DatabaseLockedError(
                f"no free connection to {self.where} within {timeout} s (every pooled "
                "connection is in use); the caller retries.",
                path=self.where,
            ) from error
        except psycopg.Error as error:
            self.fail(error)

    def begin(self, timeout: float | None = None) -> Connection:
        """A pooled connection in a new transaction (``BEGIN`` sent); a session's, or
        :meth:`transaction`'s. Give it back with :meth:`give_back`.

        ``timeout`` (seconds) bounds the wait for a free connection (default: the
        connect timeout); when a shorter one runs out, ``DatabaseLockedError`` says so at
        once (the caller, on the event loop, pauses and retries) without the diagnosis
        :meth:`fail` makes, which would connect from the caller's thread.
        """
        for _ in self._attempts():
            connection = self._getconn(timeout)
            try:
                connection.execute("BEGIN")
                return connection
            except psycopg.Error as error:
                self.give_back(connection)
                self._fail_unless_stale(error)
        raise AssertionError("unreachable: the last attempt raises")

    def _attempts(self) -> range:
        # every pooled connection may have died with a restarted server, plus a new one
        return range(self._max_size + 1)

    def _fail_unless_stale(self, error: psycopg.Error) -> None:
        """Return (try again) if ``error`` only says the connection was ended by a server
        restart before it ran anything (the pool then drops it); raise ours otherwise.

        The server ends an idle session with ``admin_shutdown`` / ``crash_shutdown``, which
        the client reads when it next sends a statement: that statement never ran, so
        running it on another connection cannot do it twice. (A statement that was
        running is rolled back by the same shutdown.)
        """
        if error.sqlstate in _SERVER_ENDED_SESSION:
            self._check_idle()
            return
        self.fail(error)

    # connections held longer: sessions, migrations, the watcher

    def give_back(self, connection: Connection) -> None:
        """Return a connection of :meth:`begin` (the pool drops it if it is broken, and
        rolls back a transaction left open)."""
        with suppress(psycopg_pool.PoolClosed):
            self._pool.putconn(connection)

    def connect(self) -> Connection:
        """A connection of its own, outside the pool (migrations, the change watcher)."""
        try:
            return psycopg.connect(self._url, autocommit=True, **self._connect_kwargs)
        except psycopg.Error as error:
            raise translate(error, self.where) from error

    # errors

    def fail(self, error: psycopg.Error) -> NoReturn:
        """Raise ours for ``error``; see the module docstring for what else happens."""
        if isinstance(error, psycopg_pool.PoolTimeout):
            self._diagnose(error)
        if is_connection_loss(error):
            self._check_idle()
        raise translate(error, self.where) from error

    def _diagnose(self, timeout: psycopg_pool.PoolTimeout) -> None:
        """No connection in time: raise the reason if the server refuses us for good."""
        try:
            self.connect().close()
        except StoreError as refused:
            if not refused.transient:
                raise refused from timeout

    def _check_idle(self) -> None:
        if not self._checking.acquire(blocking=False):
            return  # a check is under way

        def check() -> None:
            try:
                with suppress(psycopg.Error, psycopg_pool.PoolClosed):
                    self._pool.check()
            finally:
                self._checking.release()

        threading.Thread(target=check, name="romancy-pool-check", daemon=True).start()

    def close(self) -> None:
        self._pool.close()


__all__ = ["GENERIC_PLANS", "Connection", "Connections", "describe"]
