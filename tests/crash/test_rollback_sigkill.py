"""A rollback survives SIGKILL: the later compensations run in reverse order, once each.

The worker (``rollback_worker.py``) first runs ``rb-1`` (six transactional steps, each a
``do`` row in the user table ``ledger``) to completion. A second worker rolls it back to
``rb_step:2``: the compensations of steps 6, 5, 4, 3 each write an ``undo`` row through
``ctx.session``, in the same transaction as their history record, and are slow enough that
the test kills the worker between two of them. Fresh workers resume the rollback from
``App.open``'s recovery (the instance is ``rolling_back`` with a dead lock holder), some of
them killed again, blind or after progress, the last of them soon after the last undo (in
the final cut or the re-run of steps 3..6); a last one runs it to the end.

The ledger has no UNIQUE constraint: an undo that committed twice, ran out of order, or a
kept step that ran again would show as an extra or misplaced row. It must read: the six
``do`` rows, the four ``undo`` rows newest first, the four re-executed ``do`` rows.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import romancy_nb as rn
from romancy_nb.store import open_store
from romancy_nb.testing import wait_until
from tests.conftest import TableReader
from tests.processes import crash_random
from tests.sql import create_ledger

WORKER = Path(__file__).with_name("rollback_worker.py")
INSTANCE = "rb-1"
STEPS = 6
KEPT = 2  # the worker rolls back to rb_step:2
UNDONE = list(range(STEPS, KEPT, -1))  # 6, 5, 4, 3: the compensations, in the order they run
SLEEP = 0.15  # each half of a compensation: a kill within 0.75 * SLEEP of an undo row's
# commit lands before the next compensation can commit (it needs 2 * SLEEP)
MAX_ROUNDS = 12
STARTED_AT, FINISHED_AT = 10, 11  # columns of a workflow_history row


def _spawn(db: str, mode: str, logs: Path, n: int) -> subprocess.Popen[bytes]:
    out = (logs / f"worker-{n}.out").open("wb")
    err = (logs / f"worker-{n}.err").open("wb")
    try:
        return subprocess.Popen(
            [sys.executable, str(WORKER), db, mode, str(SLEEP)],
            stdout=out,
            stderr=err,
            cwd=str(logs),
        )
    finally:
        out.close()
        err.close()


def _history(store: Any, table: str) -> list[tuple[Any, ...]]:
    found = store.read_table(table, {"instance_id": INSTANCE})
    assert found is not None, table
    return sorted(found.rows)


@pytest.mark.crash
def test_rollback_killed_between_compensations_undoes_each_step_once_in_reverse(
    store_url: str, table_rows: TableReader, tmp_path: Path
) -> None:
    seed, rng = crash_random()

    logs = tmp_path / "logs"
    logs.mkdir()
    store = open_store(store_url)  # romancy_nb's tables first: the user's table goes beside them
    store.migrate()
    setup = store.open_session()  # as ctx.session writes it
    create_ledger(
        setup.connection,
        "ledger",
        "kind TEXT NOT NULL, instance_id TEXT NOT NULL, step_id TEXT NOT NULL, n INTEGER NOT NULL",
    )
    setup.commit()
    store.close()

    def undos() -> int:
        return sum(1 for row in table_rows("ledger") if row[0] == "undo")

    def status() -> str:
        reader = open_store(store_url)
        try:
            record = reader.get_instance(INSTANCE)
            return record.status if record is not None else "none"
        finally:
            reader.close()

    def log(n: int) -> str:
        return (logs / f"worker-{n}.err").read_text()

    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = _spawn(store_url, "start", logs, 0)
        assert proc.wait(timeout=120) == 0, log(0)
        before = rn.App(store_url)
        try:
            original = _history(before.store, "workflow_history")
            assert [row[2] for row in sorted(original, key=lambda r: r[1])] == [
                f"rb_step:{n}" for n in range(1, STEPS + 1)
            ]
        finally:
            before.store.close()

        # Kill phase. Round 1 rolls back and is killed after its first or second undo row;
        # later rounds resume the rollback and are killed after one more undo row or, every
        # third round on average, blind (0.05-0.6 s after the spawn: in start-up, recovery,
        # or the middle of a compensation). It ends once every undo is in: the kill after
        # the last one lands in the final cut, the re-run, or after the worker finished.
        kills_mid_rollback = 0
        rounds = 1
        while rounds <= MAX_ROUNDS:
            first = rounds == 1
            done = undos()
            proc = _spawn(store_url, "rollback" if first else "resume", logs, rounds)
            spawned = time.monotonic()
            blind = not first and rng.random() < 1 / 3
            if blind:
                delay = rng.uniform(0.05, 0.6)
                time.sleep(max(0.0, spawned + delay - time.monotonic()))  # chaos, not a wait
            else:
                goal = done + (rng.choice([1, 2]) if first else 1)
                wait_until(
                    lambda g=goal, p=proc: undos() >= g or p.poll() is not None,
                    timeout=60,
                    message="the worker compensating",
                )
                delay = rng.uniform(0.0, 0.75 * SLEEP)
                time.sleep(delay)  # chaos: the random moment of the kill, not a wait
            alive = proc.poll() is None
            if alive:
                proc.send_signal(signal.SIGKILL)
            code = proc.wait()
            after = undos()
            mid = alive and 0 < after < len(UNDONE)
            kills_mid_rollback += mid
            print(
                f"round {rounds}: {'blind' if blind else 'after progress'} kill at "
                f"+{delay:.3f} s, alive={alive}, exit={code}, undo rows {done} -> {after}, "
                f"left {status()}{' (mid-rollback)' if mid else ''}"
            )
            assert code == (-signal.SIGKILL if alive else 0), log(rounds)
            rounds += 1
            if not alive or after >= len(UNDONE):
                break
        assert kills_mid_rollback >= 1, (
            f"no kill landed between two compensations (seed {seed}); "
            "the compensations are too fast for this machine"
        )

        # A fresh worker finishes the rollback (if anything is left) and the re-run.
        proc = _spawn(store_url, "resume", logs, rounds)
        assert proc.wait(timeout=120) == 0, log(rounds)
    finally:
        if proc is not None and proc.poll() is None:  # only the worker this test started
            proc.kill()
            proc.wait()

    do = [("do", INSTANCE, f"rb_step:{n}", n) for n in range(1, STEPS + 1)]
    undo = [("undo", INSTANCE, f"compensate:rb_step:{n}", n) for n in UNDONE]
    assert table_rows("ledger") == do + undo + do[KEPT:]

    app = rn.App(store_url)
    try:
        record = app.store.get_instance(INSTANCE)
        assert record is not None
        assert (record.status, record.lock_owner) == ("completed", None), record
        assert app.get_instance(INSTANCE).output == list(range(1, STEPS + 1))

        # The kept steps are the very rows recorded before the rollback (not re-executed);
        # the later ones are new rows, and nothing of the unwinding stays in history.
        history = sorted(_history(app.store, "workflow_history"), key=lambda row: row[1])
        assert [row[2] for row in history] == [f"rb_step:{n}" for n in range(1, STEPS + 1)]
        by_step = {row[2]: row for row in original}
        assert history[:KEPT] == [by_step[f"rb_step:{n}"] for n in range(1, KEPT + 1)]
        for row in history[KEPT:]:  # started after every original step had finished
            assert row[STARTED_AT] > max(r[FINISHED_AT] for r in original), row

        # One archived run holds what the rollback cut: the original later steps, each
        # compensation once (completed, newest step first) and the rollback's marker.
        runs = app.archived_runs(INSTANCE)
        assert [(r.status, r.cut_after) for r in runs] == [("rolled_back", f"rb_step:{KEPT}")]
        archived = app.get_archived_history(INSTANCE, runs[0].run_no)
        forward = [s.step_id for s in archived if s.kind == "activity"]
        assert forward == [f"rb_step:{n}" for n in range(KEPT + 1, STEPS + 1)]
        compensations = [(s.step_id, s.status) for s in archived if s.kind == "compensation"]
        assert compensations == [(f"compensate:rb_step:{n}", "completed") for n in UNDONE]
        assert [s.step_id for s in archived if s.kind == "rollback"] == ["@rollback"]
        for table in ("step_attempts", "waits"):
            assert _history(app.store, table) == [], table
        # Every killed worker's registration was cleared; the last one left cleanly.
        assert app.store.list_workers() == []
    finally:
        app.store.close()
