"""Sharing the database file with other code in the same process.

Python's ``sqlite3`` module links its own copy of SQLite, besides the one APSW bundles. Two
SQLite libraries in one process cannot share a file: POSIX advisory locks belong to the
process, so when the ``sqlite3`` connection closes its file descriptor the kernel drops
*every* lock the process holds on that file, APSW's included, and another connection may
then rebuild the WAL index under APSW's feet — seen as SIGBUS, ``database disk image is
malformed`` and ``disk I/O error`` on every later statement. SQLite documents it as a way to
corrupt a database (https://sqlite.org/howtocorrupt.html, §2.2 "POSIX advisory locks
canceled by a separate thread doing close()" and §2.2.1 "Multiple copies of SQLite linked
into the same application").

That cannot be made safe from here, so it is refused before any harm: an audit hook on the
``sqlite3.connect`` event raises :class:`~romancy_nb.errors.SharedFileError` when the file
is one an open store of this process holds. :func:`connect` is the safe alternative: a
connection from the same SQLite library, set up like the store's.

Other processes are not affected (locks of different processes do not interfere this way),
nor are other files.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import apsw

from romancy_nb.errors import SharedFileError, StoreError
from romancy_nb.store.sqlite import pragmas
from romancy_nb.store.sqlite.connections import resolve
from romancy_nb.store.sqlite.translate import Context, translate

_open_files: Counter[str] = Counter()
"""Resolved paths of the files open stores of this process hold (a count per store)."""
_lock = threading.Lock()
_hook_installed = False


def hold(path: str) -> None:
    """Note that a store of this process holds ``path``; installs the hook the first time."""
    global _hook_installed
    with _lock:
        if not _hook_installed:
            sys.addaudithook(_refuse_stdlib_connect)  # a hook cannot be removed: once
            _hook_installed = True
        _open_files[path] += 1


def release(path: str) -> None:
    """The store holding ``path`` closed."""
    with _lock:
        _open_files[path] -= 1
        if _open_files[path] <= 0:
            del _open_files[path]


def _candidates(database: Any) -> set[str]:
    """The files a ``sqlite3.connect`` argument may name: as a path, and as a URI."""
    try:
        text = os.fsdecode(database)
    except TypeError:
        return set()
    if text in ("", ":memory:"):
        return set()
    names = {text}
    if text.startswith("file:"):  # ``uri=True`` is not part of the event: try both readings
        names.add(unquote(urlsplit(text).path))
    return {os.path.realpath(os.path.expanduser(name)) for name in names if name}


def _refuse_stdlib_connect(event: str, args: tuple[Any, ...]) -> None:
    if event != "sqlite3.connect" or not _open_files:
        return
    held = _candidates(args[0]) & set(_open_files) if args else set()
    if held:
        path = held.pop()
        raise SharedFileError(
            f"sqlite3.connect({args[0]!r}) refused: {path} is open in this process by "
            "romancy_nb. Python's sqlite3 module links a second SQLite library, and closing "
            "its connection drops the file locks romancy_nb's connection holds, which can "
            "corrupt the database. Use rn.connect(path) for your own queries (the same "
            "SQLite, the same settings), ctx.session inside an activity, the views "
            "(rn.instances(), rn.history(), rn.events(), ...) or %%sql instead.",
            path=path,
        )


def connect(
    path: str | Path, *, readonly: bool = False, busy_timeout: float = 5.0
) -> apsw.Connection:
    """An APSW connection to an existing romancy_nb database, set up like the store's.

    For your own queries beside an open :class:`~romancy_nb.App` in the same process, where
    Python's ``sqlite3`` module must not be used (see this module). It waits
    ``busy_timeout`` seconds for locks and does not change the file's journal mode.
    ``readonly=True`` opens it with ``SQLITE_OPEN_READONLY``; read-only use is what it is
    for: writing romancy_nb's own tables behind the engine's back is not supported.
    """
    target = resolve(str(path), readonly=readonly)
    if target.file is None or not target.file.exists():
        raise StoreError(f"no database at {path}", path=str(path))
    flags = apsw.SQLITE_OPEN_URI | (
        apsw.SQLITE_OPEN_READONLY if target.readonly else apsw.SQLITE_OPEN_READWRITE
    )
    busy_ms = int(busy_timeout * 1000)
    try:
        connection = apsw.Connection(target.filename, flags=flags)
        pragmas.recommended(connection, "NORMAL", busy_ms, wal=False)
    except apsw.Error as error:
        raise translate(error, Context(target.where, True, target.readonly)) from error
    return connection


__all__ = ["connect", "hold", "release"]
