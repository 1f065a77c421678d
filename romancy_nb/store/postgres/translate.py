"""psycopg errors turned into romancy_nb's, with a message that says what to do.

The engine retries a :class:`~romancy_nb.errors.StoreError` whose ``transient`` is true and
stops on any other, so the one question each branch answers is: may the same call succeed
later without anyone changing anything? A server that is away, restarting, out of
connections or failing over, and a transaction that lost a serialization race, will; a
wrong password, a missing database or a bad statement will not.

Connections an error broke are not handled here: psycopg marks them ``BAD`` and the pool
drops them when they come back (see ``connections.py``).
"""

from __future__ import annotations

import re

import psycopg
import psycopg_pool

from romancy_nb.errors import DatabaseLockedError, StoreError, StoreUnavailableError

# SQLSTATE classes (https://www.postgresql.org/docs/current/errcodes-appendix.html)
_GONE = ("08", "57P01", "57P02", "57P03", "53")
"""Connection exceptions, the server shutting down / crashed / starting up, and
insufficient resources (too many connections, a full disk, out of memory)."""
_RACES = ("40001", "40P01", "55P03")
"""Serialization failure, deadlock, lock not available: the transaction lost a race."""
_DENIED = ("28",)
"""Invalid authorization (a wrong password, an unknown role, refused by pg_hba.conf)."""


_REFUSALS = {
    "3D000": re.compile(r'FATAL: +database ".*" does not exist'),
    "28000": re.compile(
        r"FATAL: +(password authentication failed|role \".*\" does not exist"
        r"|no pg_hba\.conf entry|.* authentication failed)"
    ),
}
"""A refused connection carries no SQLSTATE in psycopg (libpq reports it as text): the
server's FATAL message tells a wrong database or login from a server that is away."""


def _state(error: psycopg.Error) -> str:
    if error.sqlstate:
        return error.sqlstate
    text = str(error)
    return next((state for state, found in _REFUSALS.items() if found.search(text)), "")


def is_connection_loss(error: BaseException) -> bool:
    """Whether ``error`` means the server or the connection went away (not a bad query):
    the pool's idle connections may be dead too."""
    if isinstance(error, psycopg_pool.PoolTimeout):
        return False
    if isinstance(error, psycopg.OperationalError):
        state = _state(error)
        return not state or state.startswith(_GONE)
    return False


def translate(error: Exception, where: str) -> StoreError:
    """The error of ours for ``error`` on the database ``where`` (a URL without its
    password); the caller raises it ``from error``."""
    if isinstance(error, StoreError):
        return error
    if isinstance(error, psycopg_pool.PoolTimeout):
        return StoreUnavailableError(
            f"no connection to {where} within the connect timeout: the server is away "
            f"or every pooled connection is busy ({error}); the call is retried. Check "
            "that the server runs, or raise App(...) / open_store(..., max_size=...).",
            path=where,
        )
    if isinstance(error, psycopg_pool.PoolClosed):
        return StoreError(f"the store on {where} is closed", path=where)
    if not isinstance(error, psycopg.Error):
        return StoreError(f"database error on {where}: {error}", path=where)
    state = _state(error)
    if state.startswith(_RACES):
        return DatabaseLockedError(
            f"a transaction on {where} lost a race with another one ({error.sqlstate}: "
            f"{_first_line(error)}); it was rolled back and the call is retried.",
            path=where,
        )
    if state.startswith(_DENIED):
        return StoreError(
            f"{where} refused the connection: {_first_line(error)}. Check the user name and "
            "password in the URL (or PGPASSWORD / ~/.pgpass) and the server's pg_hba.conf.",
            path=where,
        )
    if state == "3D000":
        return StoreError(
            f"{where}: {_first_line(error)}. Create it first (createdb, or CREATE DATABASE), "
            "or point the URL at an existing database.",
            path=where,
        )
    if state == "25006":  # read-only transaction: a standby, or a primary being demoted
        return StoreUnavailableError(
            f"{where} is read-only right now (a standby, or a failover in progress): "
            f"{_first_line(error)}; the call is retried.",
            path=where,
        )
    if state == "57014":  # canceled by statement_timeout or an administrator
        return StoreUnavailableError(
            f"a statement on {where} was cancelled ({_first_line(error)}); it is retried.",
            path=where,
        )
    if is_connection_loss(error) or isinstance(error, psycopg.InterfaceError):
        return StoreUnavailableError(
            f"lost the connection to {where} ({_first_line(error)}); the call is retried "
            "on a new connection once the server is back.",
            path=where,
        )
    return StoreError(f"database error on {where}: {_first_line(error)}", path=where)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


__all__ = ["is_connection_loss", "translate"]
