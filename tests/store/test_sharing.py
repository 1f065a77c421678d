"""Sharing the database file in one process: Python's ``sqlite3`` is refused, ``rn.connect``
is the safe way.

The hazard, reproduced: APSW and the stdlib ``sqlite3`` module are two SQLite libraries.
When the stdlib connection closes, the kernel drops every POSIX lock the process holds on
the file, APSW's write lock included: another process can then write while APSW believes
it holds the lock (SQLite's "How to corrupt" §2.2.1). So the stdlib connect is refused, and
the lock stays held.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import apsw
import pytest

import romancy_nb as rn
from romancy_nb.store import open_store

_HOLDER = textwrap.dedent(
    """
    import sqlite3, sys
    import romancy_nb as rn
    from romancy_nb.store import open_store

    def step(name):
        print(name, flush=True)
        sys.stdin.readline()

    path = sys.argv[1]
    store = open_store(path)
    store.migrate()
    session = store.open_session()  # holds the write lock, as ctx.session does
    session.connection.execute("CREATE TABLE user_rows (x)")
    step("holding")
    try:
        stdlib = sqlite3.connect(path)
        stdlib.execute("SELECT count(*) FROM workflow_instances").fetchall()
        stdlib.close()
        step("stdlib connected and closed")
    except rn.SharedFileError as error:
        step("refused: " + str(error))
    session.rollback()
    store.close()
    stdlib = sqlite3.connect(path)
    stdlib.execute("SELECT count(*) FROM workflow_instances").fetchall()
    stdlib.close()
    step("allowed once the store is closed")
    """
)


def _can_take_the_write_lock(db: Path) -> bool:
    other = apsw.Connection(str(db))  # another process's view of the file
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except apsw.BusyError:
        return False
    finally:
        other.close()


def test_stdlib_sqlite3_cannot_drop_the_stores_lock(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None

    def next_step() -> str:
        line = holder.stdout.readline().strip()  # type: ignore[union-attr]
        assert line, holder.stderr.read() if holder.stderr else ""
        return line

    def go_on() -> None:
        holder.stdin.write("\n")  # type: ignore[union-attr]
        holder.stdin.flush()  # type: ignore[union-attr]

    try:
        assert next_step() == "holding"
        assert not _can_take_the_write_lock(db)
        go_on()
        step = next_step()
        # Before the fix: "stdlib connected and closed", and the lock below was gone.
        assert step.startswith("refused: "), step
        assert "rn.connect(path)" in step and "%%sql" in step and "ctx.session" in step
        assert not _can_take_the_write_lock(db), "the store's write lock was dropped"
        go_on()
        assert next_step() == "allowed once the store is closed"
        go_on()
    finally:
        holder.stdin.close()  # at end of input the holder runs to its end
        holder.wait(timeout=60)
    assert holder.returncode == 0, holder.stderr.read() if holder.stderr else ""


def test_every_spelling_of_the_file_is_refused_and_closing_allows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    db = tmp_path / "my db%.sqlite"
    link = tmp_path / "link.db"
    link.symlink_to(db)
    monkeypatch.chdir(tmp_path)
    store = open_store(db)
    try:
        store.migrate()
        spellings: list[tuple[object, bool]] = [
            (str(db), False),
            (db, False),
            (db.name, False),  # relative to the working directory
            (link, False),
            (f"file:{db}?mode=ro", True),
            ("file:" + str(db).replace(" ", "%20").replace("%.", "%25."), True),
        ]
        for database, uri in spellings:
            with pytest.raises(rn.SharedFileError) as info:
                sqlite3.connect(database, uri=uri)  # type: ignore[call-overload]
            assert str(db) in str(info.value)
        other = tmp_path / "other.db"
        sqlite3.connect(other).close()  # other files are fine
        sqlite3.connect(":memory:").close()
        assert store.get_instance("x") is None  # the store is unharmed
    finally:
        store.close()
    sqlite3.connect(db).close()  # no store holds it any more


def test_two_stores_on_one_file_keep_it_held_until_both_close(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "two.db"
    first = open_store(db)
    second = open_store(db)
    first.close()
    with pytest.raises(rn.SharedFileError):
        sqlite3.connect(db)
    second.close()
    sqlite3.connect(db).close()


@rn.activity
def sharing_add(ctx: rn.ActivityContext, x: int) -> int:
    return x + 1


@rn.workflow
async def sharing_flow(ctx: rn.WorkflowContext, x: int) -> int:
    return await sharing_add(ctx, x)


@pytest.mark.sqlite_only  # rn.connect opens the SQLite file with apsw
async def test_rn_connect_works_beside_an_open_app(db_path: Path) -> None:
    async with rn.App(db_path) as app:
        iid = await app.start(sharing_flow, 1)
        assert await app.result(iid) == 2
        connection = rn.connect(db_path)
        try:
            rows = connection.execute(
                "SELECT step_id, output FROM workflow_history WHERE instance_id = ?", (iid,)
            ).fetchall()
            assert rows == [("sharing_add:1", "2")]
            assert next(iter(connection.execute("PRAGMA busy_timeout")))[0] == 5000
        finally:
            connection.close()
        readonly = rn.connect(db_path, readonly=True)
        try:
            with pytest.raises(apsw.ReadOnlyError):
                readonly.execute("DELETE FROM workflow_history")
        finally:
            readonly.close()
        # the app goes on after the other connections closed (no lock was lost)
        assert await app.result(await app.start(sharing_flow, 5)) == 6
    with pytest.raises(rn.StoreError, match="no database"):
        rn.connect(os.path.join(db_path.parent, "missing.db"))
