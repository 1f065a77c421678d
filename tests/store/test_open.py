"""Opening files that are not a plain writable romancy_nb database.

- a SQLite database of another application is refused before a single byte of it changes
  (not even ``schema_migrations`` or the WAL journal mode is written);
- a database this user may not write (file mode 0444, a read-only folder) is opened
  read-only: the views and ``romancy-nb list/get/history`` work, writes fail clearly.

Root passes every permission check, so the permission cases run in a subprocess that is
root without ``CAP_DAC_OVERRIDE`` (``setpriv``), for which file modes apply as for anyone;
``readonly=True`` is tested directly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import apsw
import pytest

import romancy_nb as rn
from romancy_nb.store import InstanceRecord, open_store

# a foreign database


def _foreign(path: Path, *, dbmate: bool = False) -> bytes:
    connection = apsw.Connection(str(path))
    connection.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
    connection.execute("INSERT INTO orders (item) VALUES ('pen'), ('cup')")
    if dbmate:  # another app's dbmate migrations
        connection.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY)")
        connection.execute("INSERT INTO schema_migrations VALUES ('20200101000000')")
    connection.close()
    return path.read_bytes()


@pytest.mark.parametrize("dbmate", [False, True], ids=["plain", "dbmate"])
async def test_a_foreign_sqlite_database_is_refused_untouched(tmp_path: Path, dbmate: bool) -> None:
    path = tmp_path / "shop.db"
    before = _foreign(path, dbmate=dbmate)
    with pytest.raises(rn.StoreError) as info:
        open_store(path)
    assert "another application" in str(info.value) and "orders" in str(info.value)
    with pytest.raises(rn.StoreError, match="another application"):
        async with rn.App(path):
            pass
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop.db"]  # no -wal, no -shm


def test_user_tables_beside_ours_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "ours.db"
    store = open_store(path)
    store.migrate()
    store.connection.execute("CREATE TABLE my_notes (x)")
    store.close()
    store = open_store(path)  # ours: it records our migrations
    try:
        assert store.migrate() == []
    finally:
        store.close()


# read-only databases


@rn.activity
def open_double(ctx: rn.ActivityContext, x: int) -> int:
    return 2 * x


@rn.workflow
async def open_flow(ctx: rn.WorkflowContext, x: int) -> int:
    return await open_double(ctx, x) + await open_double(ctx, x + 1)


async def _database(path: Path) -> str:
    async with rn.App(path) as app:
        iid = await app.start(open_flow, 3, instance_id="ro-1")
        assert await app.result(iid) == 14
    return iid


def _record(iid: str) -> InstanceRecord:
    now = time.time()
    return InstanceRecord(iid, "wf", "running", "{}", None, None, None, None, None, now, now)


async def test_readonly_true_lists_and_refuses_writes_clearly(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    iid = await _database(path)
    before = path.read_bytes()
    store = open_store(path, readonly=True)
    try:
        assert store.migrate() == []
        assert [s.step_id for s in store.load_history(iid)] == ["open_double:1", "open_double:2"]
        with pytest.raises(rn.StoreError) as info:
            store.create_instance(_record("new"))
        assert "read-only" in str(info.value) and not info.value.transient
    finally:
        store.close()

    app = rn.App(f"file:{path}?mode=ro")  # the same through a URI, and the notebook views
    try:
        frame = rn.instances(app=app)
        assert list(frame["instance_id"]) == [iid]
        assert list(rn.history(iid, app=app)["step_id"]) == ["open_double:1", "open_double:2"]
        assert app.get_instance(iid).status == "completed"
    finally:
        app.store.close()
    assert path.read_bytes() == before

    with pytest.raises(rn.StoreError, match="no database"):
        open_store(tmp_path / "missing.db", readonly=True)


def test_a_readonly_database_with_an_older_schema_says_so(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    connection = apsw.Connection(str(path))
    connection.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY)")
    connection.execute("INSERT INTO schema_migrations VALUES ('20261125000000')")
    connection.close()
    store = open_store(path, readonly=True)
    try:
        with pytest.raises(rn.StoreError, match="older than this romancy_nb") as info:
            store.migrate()
        assert "write access" in str(info.value)
    finally:
        store.close()


_VIEWS = textwrap.dedent(
    """
    import json, sys, time
    import romancy_nb as rn
    from romancy_nb.store import InstanceRecord

    app = rn.App(sys.argv[1])
    iid = sys.argv[2]
    result = {
        "instances": list(rn.instances(app=app)["instance_id"]),
        "history": list(rn.history(iid, app=app)["step_id"]),
        "readonly": app.store.readonly,
    }
    now = time.time()
    try:
        app.store.create_instance(
            InstanceRecord("x", "wf", "running", "{}", None, None, None, None, None, now, now))
        result["write"] = "written"
    except rn.StoreError as error:
        result["write"] = str(error)
    app.store.close()
    print(json.dumps(result))
    """
)


def _unprivileged(command: list[str]) -> list[str]:
    """``command`` run so that file modes apply to it (root: without CAP_DAC_OVERRIDE)."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make file modes apply")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search,-fowner", *command]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from romancy_nb.cli import main; main()", *args]
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("ROMANCY_DB", None)
    return subprocess.run(
        _unprivileged(command), capture_output=True, text=True, timeout=300, env=env
    )


@pytest.mark.parametrize("what", ["file-0444", "folder-0555"])
async def test_a_database_this_user_cannot_write_can_still_be_listed(
    tmp_path: Path, what: str
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "romancy.db"
    iid = await _database(path)
    before = path.read_bytes()
    locked = path if what == "file-0444" else folder
    locked.chmod(0o444 if what == "file-0444" else 0o555)
    try:
        listed = _cli("list", "--db", str(path), "--json")
        assert listed.returncode == 0, listed.stderr
        assert [i["instance_id"] for i in json.loads(listed.stdout)["instances"]] == [iid]
        got = _cli("get", iid, "--db", str(path), "--json")
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["status"] == "completed"
        history = _cli("history", iid, "--db", str(path), "--json")
        assert history.returncode == 0, history.stderr
        assert [s["step_id"] for s in json.loads(history.stdout)] == [
            "open_double:1",
            "open_double:2",
        ]
        sent = _cli("event", "some.type", "--db", str(path))
        assert sent.returncode == 1 and "read-only" in sent.stderr, sent.stderr

        views = subprocess.run(
            _unprivileged([sys.executable, "-c", _VIEWS, str(path), iid]),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert views.returncode == 0, views.stderr
        seen = json.loads(views.stdout.strip().splitlines()[-1])
        assert seen["instances"] == [iid]
        assert seen["history"] == ["open_double:1", "open_double:2"]
        assert "may not write" in seen["readonly"]
        assert "read-only" in seen["write"], seen["write"]
    finally:
        locked.chmod(0o755 if what == "folder-0555" else 0o644)
    assert path.read_bytes() == before
