"""History is keyed for how it is read: ``(instance_id, seq)`` is the primary key (a load is
one index range, no sort; a seq is used once); a database made with the older schema (keyed
by step id) is rebuilt by a migration that keeps every row. Step ids are unique per instance
by the engine's construction (see the migration for why no second index).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import apsw
import pytest

from romancy_nb.store import InstanceRecord, StepRecord, migrate, open_store

NEW = "20261201000000"  # the migration that rebuilt the history tables
_COLUMNS = (
    "instance_id, seq, step_id, kind, name, status, input, output, error, attempts, "
    "started_at, finished_at"
)


def _old_database(path: Path) -> None:
    """A file as the versions before ``NEW`` left it, with rows in both history tables."""
    connection = apsw.Connection(str(path))
    connection.execute("PRAGMA journal_mode=WAL").fetchall()
    connection.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY)")
    for m in migrate.load("romancy_nb.store.sqlite.migrations"):
        if m.version < NEW:
            for _ in connection.execute(m.up):  # read to the end: every statement runs
                pass
            connection.execute("INSERT INTO schema_migrations VALUES (?)", (m.version,))
    for iid in ("a", "b"):
        connection.execute(
            "INSERT INTO workflow_instances (instance_id, workflow_name, status, input, "
            "created_at, updated_at) VALUES (?, 'wf', 'completed', '{}', 1, 1)",
            (iid,),
        )
    steps = [  # "a" is regular; two steps of "b" share a seq (nothing prevented it)
        ("a", 2, "act:2", 2.0),
        ("a", 1, "act:1", 1.0),
        ("a", 3, "act:3", 3.0),
        ("b", 1, "act:1", 1.0),
        ("b", 2, "act:3", 2.5),
        ("b", 2, "act:2", 2.0),
    ]
    for iid, seq, step_id, at in steps:
        connection.execute(
            f"INSERT INTO workflow_history ({_COLUMNS}) "
            "VALUES (?, ?, ?, 'activity', 'act', 'completed', '[]', ?, NULL, 1, ?, ?)",
            (iid, seq, step_id, f'"{step_id}"', at, at),
        )
        connection.execute(
            f"INSERT INTO workflow_history_archive (run_no, {_COLUMNS}) "
            "VALUES (1, ?, ?, ?, 'activity', 'act', 'completed', '[]', ?, NULL, 1, ?, ?)",
            (iid, seq, step_id, f'"{step_id}"', at, at),
        )
    connection.close()


def _primary_key(connection: apsw.Connection, table: str) -> list[str]:
    info = connection.execute(f"PRAGMA table_info({table})").fetchall()
    return [row[1] for row in sorted((r for r in info if r[5]), key=lambda r: r[5])]


def _plans(connection: apsw.Connection, call: Callable[[], object]) -> list[str]:
    """The query plan of every statement ``call`` ran on ``connection``."""
    seen: list[tuple[str, object]] = []

    def trace(cursor: apsw.Cursor, sql: str, bindings: object) -> bool:
        seen.append((sql, bindings))
        return True

    connection.exec_trace = trace
    try:
        call()
    finally:
        connection.exec_trace = None
    return [
        " / ".join(row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", bindings))
        for sql, bindings in seen
    ]


@pytest.mark.parametrize("start", ["new", "old-schema"])
def test_history_is_keyed_by_seq_and_reads_need_no_sort(tmp_path: Path, start: str) -> None:
    path = tmp_path / "history.db"
    if start == "old-schema":
        _old_database(path)
    store = open_store(path)
    try:
        applied = store.migrate()
        db = store.connection
        assert _primary_key(db, "workflow_history") == ["instance_id", "seq"]
        assert _primary_key(db, "workflow_history_archive") == ["instance_id", "run_no", "seq"]
        for plan in _plans(db, lambda: store.load_history("a")) + _plans(
            db, lambda: store.load_archived_history("a", 1)
        ):
            assert "TEMP B-TREE" not in plan, plan
            assert "PRIMARY KEY" in plan, plan
        assert NEW in applied
        if start == "old-schema":  # NEW and the migrations shipped after it
            assert applied[0] == NEW and all(version > NEW for version in applied[1:])

        if start == "new":
            now = time.time()
            store.create_instance(
                InstanceRecord("a", "wf", "running", "{}", None, None, "me", None, None, now, now)
            )
            step = StepRecord("a", 1, "act:1", "activity", "act", "completed", "[]", "1", None,
                              1, now, now)  # fmt: skip
            assert store.record_step(step, "me")
            with pytest.raises(Exception, match="UNIQUE"):  # the same seq twice
                store.record_step(step._replace(step_id="act:2"), "me")
            return

        # every row kept; "b"'s shared seq renumbered in (seq, started_at) order
        def history(iid: str) -> list[tuple[int, str, str | None]]:
            return [(s.seq, s.step_id, s.output) for s in store.load_history(iid)]

        assert history("a") == [(1, "act:1", '"act:1"'), (2, "act:2", '"act:2"'),
                                (3, "act:3", '"act:3"')]  # fmt: skip
        assert history("b") == [(1, "act:1", '"act:1"'), (2, "act:2", '"act:2"'),
                                (3, "act:3", '"act:3"')]  # fmt: skip
        archived = [(s.seq, s.step_id) for s in store.load_archived_history("b", 1)]
        assert archived == [(1, "act:1"), (2, "act:2"), (3, "act:3")]
    finally:
        store.close()
