"""A full disk or an I/O error is transient (``StoreUnavailableError``), and the store
recovers from it: its connection is reopened, so the next call succeeds once the fault is
gone; a store that cannot reopen its file stops with one clear error, never a loop.

The faults are real: ``RLIMIT_FSIZE`` makes every write to a file fail (``EFBIG``, which
SQLite reports as a disk I/O error), in a subprocess so the limit cannot touch pytest's
own files; ``PRAGMA max_page_count`` makes SQLite's "database or disk is full" happen.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import romancy_nb as rn
from romancy_nb.store import InstanceRecord, open_store

_PRELUDE = textwrap.dedent(
    """
    import json, os, resource, signal, sys, time
    import romancy_nb as rn
    from romancy_nb.store import InstanceRecord, open_store

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails: EFBIG
    SOFT, HARD = resource.getrlimit(resource.RLIMIT_FSIZE)

    def record(iid):
        now = time.time()
        return InstanceRecord(iid, "wf", "running", "{}", None, None, None, None, None, now, now)

    def no_writes():
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, HARD))

    def writes_again():
        resource.setrlimit(resource.RLIMIT_FSIZE, (SOFT, HARD))

    def outcome(call):
        try:
            call()
            return "ok"
        except rn.StoreError as error:
            return {"type": type(error).__name__, "transient": error.transient,
                    "message": str(error)}

    store = open_store(sys.argv[1])
    store.migrate()
    store.create_instance(record("before"))
    result = {}
    """
)


def _run(db: Path, body: str) -> dict[str, object]:
    script = _PRELUDE + textwrap.dedent(body) + "\nprint(json.dumps(result))\n"
    done = subprocess.run(
        [sys.executable, "-c", script, str(db)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_io_error_is_transient_and_the_store_reopens_and_recovers(tmp_path: Path) -> None:
    result = _run(
        tmp_path / "io.db",
        """
        engine = store.connection
        no_writes()
        result["write"] = outcome(lambda: store.create_instance(record("during")))
        session = store.open_session()
        session.connection.execute("CREATE TABLE user_rows (x)")
        result["session"] = outcome(session.commit)
        writes_again()
        result["reopened"] = store.connection is not engine
        result["after"] = outcome(lambda: store.create_instance(record("after")))
        def session_write():
            s = store.open_session()
            s.connection.execute("CREATE TABLE user_rows (x)")
            s.commit()
        result["session_after"] = outcome(session_write)
        result["ids"] = sorted(r.instance_id for r in store.list_instances(
            __import__("romancy_nb.store", fromlist=["InstanceQuery"]).InstanceQuery()))
        """,
    )
    for call in ("write", "session"):
        error = result[call]
        assert isinstance(error, dict), (call, error)
        assert error["type"] == "StoreUnavailableError", error
        assert error["transient"] is True
        assert "disk I/O error" in error["message"]
    assert result["reopened"] is True
    assert result["after"] == "ok"
    assert result["session_after"] == "ok"
    assert result["ids"] == ["after", "before"]


def test_a_store_that_cannot_reopen_stops_with_one_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "gone.db"
    result = _run(
        db,
        """
        os.rename(sys.argv[1], sys.argv[1] + ".moved")  # the file is gone from its path
        no_writes()
        result["first"] = outcome(lambda: store.create_instance(record("during")))
        writes_again()
        result["second"] = outcome(lambda: store.create_instance(record("later")))
        result["read"] = outcome(lambda: store.get_instance("before"))
        store.close()
        """,
    )
    for call in ("first", "second", "read"):
        error = result[call]
        assert isinstance(error, dict), (call, error)
        assert error["type"] == "StoreError", error
        assert error["transient"] is False, error
        assert "cannot be reopened" in error["message"]
        assert str(db.resolve()) in error["message"]
    assert not db.exists()  # nothing recreated an empty database in its place


def _record(iid: str) -> InstanceRecord:
    now = time.time()
    return InstanceRecord(
        iid, "wf", "running", "x" * 20_000, None, None, None, None, None, now, now
    )


def test_a_full_database_is_transient_and_writes_resume_when_space_returns(
    tmp_path: Path,
) -> None:
    store = open_store(tmp_path / "full.db")
    try:
        store.migrate()
        pages = next(iter(store.connection.execute("PRAGMA page_count")))[0]
        store.connection.execute(f"PRAGMA max_page_count = {pages}")  # no room to grow
        with pytest.raises(rn.StoreUnavailableError) as info:
            store.create_instance(_record("big"))
        assert info.value.transient
        assert "full" in str(info.value)
        store.connection.execute("PRAGMA max_page_count = 1073741823")
        assert store.create_instance(_record("big"))
        assert store.get_instance("big") is not None
    finally:
        store.close()
