"""Exactly-once under SIGKILL: a worker killed at random moments, restarted each time.

The worker (``ledger_worker.py``) runs 20 workflows × 20 transactional activities; each
activity writes one row into a user table ``ledger`` through ``ctx.session``, in the same
transaction as its history record. The ledger has no UNIQUE constraint, so a step that
committed twice would show up as a duplicate row. After several kills that land while work
is in progress, and a final run to completion, the ledger must hold exactly one row per
(instance, step), and those rows must match the history's completed steps one-to-one.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import romancy_nb as rn
from romancy_nb.store import open_store
from romancy_nb.testing import wait_until
from tests.conftest import TableReader
from tests.processes import crash_random
from tests.sql import create_ledger

WORKER = Path(__file__).with_name("ledger_worker.py")
INSTANCES = 20
STEPS = 20
TOTAL = INSTANCES * STEPS
STEP_SLEEP = "0.003"  # per half of each activity: slow enough for kills to land mid-run
MIN_KILLS_IN_PROGRESS = 5
MIN_ROUNDS = 10
MAX_ROUNDS = 40


def _spawn(db: str, logs: Path, n: int) -> subprocess.Popen[bytes]:
    out = (logs / f"worker-{n}.out").open("wb")
    err = (logs / f"worker-{n}.err").open("wb")
    try:
        return subprocess.Popen(
            [sys.executable, str(WORKER), db, STEP_SLEEP],
            stdout=out,
            stderr=err,
            cwd=str(logs),
        )
    finally:
        out.close()
        err.close()


@pytest.mark.crash
def test_sigkill_at_random_moments_keeps_the_ledger_exactly_once(
    store_url: str, table_rows: TableReader, tmp_path: Path
) -> None:
    seed, rng = crash_random()

    logs = tmp_path / "logs"
    logs.mkdir()
    store = open_store(store_url)  # romancy_nb's tables first: the user's table goes beside them
    store.migrate()
    setup = store.open_session()  # as ctx.session writes it
    create_ledger(setup.connection, "ledger", "instance_id TEXT NOT NULL, step_id TEXT NOT NULL")
    setup.commit()
    store.close()

    def rows() -> int:
        return len(table_rows("ledger"))

    kills_in_progress = 0
    rounds = 0
    finished_early = False
    proc: subprocess.Popen[bytes] | None = None
    try:
        # Kill phase. Every third round kills "blind", 0.05–0.6 s after the spawn (so kills
        # also land in start-up, migration and recovery); the others wait until the worker
        # has committed new ledger rows, then kill after a random extra delay.
        while rounds < MAX_ROUNDS and (
            kills_in_progress < MIN_KILLS_IN_PROGRESS or rounds < MIN_ROUNDS
        ):
            before = rows()
            proc = _spawn(store_url, logs, rounds)
            spawned = time.monotonic()
            blind = rounds % 3 == 2
            if blind:
                delay = rng.uniform(0.05, 0.6)
                time.sleep(max(0.0, spawned + delay - time.monotonic()))  # chaos, not a wait
            else:
                wait_until(
                    lambda b=before, p=proc: rows() > b or p.poll() is not None,
                    timeout=60,
                    message="the restarted worker resuming work",
                )
                delay = rng.uniform(0.0, 0.1)
                time.sleep(delay)  # chaos: the random moment of the kill, not a wait
            alive = proc.poll() is None
            if alive:
                proc.send_signal(signal.SIGKILL)
            code = proc.wait()
            after = rows()
            in_progress = alive and before < after < TOTAL
            kills_in_progress += in_progress
            print(
                f"round {rounds}: {'blind' if blind else 'after progress'} kill "
                f"at +{delay:.3f} s, alive={alive}, exit={code}, ledger {before} -> {after}"
                f"{' (in progress)' if in_progress else ''}"
            )
            rounds += 1
            if not alive:
                assert code == 0, (logs / f"worker-{rounds - 1}.err").read_text()
                finished_early = True
                break
            assert code == -signal.SIGKILL
            assert after <= TOTAL

        assert not finished_early and kills_in_progress >= MIN_KILLS_IN_PROGRESS, (
            f"only {kills_in_progress} kill(s) landed mid-run in {rounds} rounds "
            f"(seed {seed}); the workload is too short for this machine"
        )

        # Final run to completion: the worker resumes every orphan and exits 0.
        proc = _spawn(store_url, logs, rounds)
        code = proc.wait(timeout=120)
        assert code == 0, (logs / f"worker-{rounds}.err").read_text()
    finally:
        if proc is not None and proc.poll() is None:  # only the worker this test started
            proc.kill()
            proc.wait()

    # Verify: ledger exactly once per (instance, step), equal to the completed history.
    ledger = table_rows("ledger")
    counts = Counter(ledger)
    duplicates = {key: n for key, n in counts.items() if n > 1}
    assert not duplicates, f"steps committed more than once: {duplicates}"
    expected = {
        (f"wf-{i}", f"crash_ledger_step:{n}") for i in range(INSTANCES) for n in range(1, STEPS + 1)
    }
    assert len(ledger) == TOTAL
    assert set(ledger) == expected

    app = rn.App(store_url)
    try:
        instances = app.list_instances(limit=1000).instances
        assert sorted(info.instance_id for info in instances) == sorted(
            f"wf-{i}" for i in range(INSTANCES)
        )
        for info in instances:
            assert info.status == "completed", (info.instance_id, info.status, info.error)
            assert info.output == sum(range(STEPS))
            assert info.lock_owner is None
        history: set[tuple[str, str]] = set()
        for info in instances:
            steps = app.get_history(info.instance_id)
            activity_steps = [s for s in steps if s.kind == "activity"]
            assert all(s.status == "completed" for s in activity_steps), [
                (s.step_id, s.status, s.error) for s in activity_steps if s.status != "completed"
            ]
            assert all(s.name == "crash_ledger_step" for s in activity_steps)
            assert [s.output for s in activity_steps] == list(range(STEPS))
            history.update((info.instance_id, s.step_id) for s in activity_steps)
            assert len(activity_steps) == STEPS
        assert history == set(ledger)
        # Every killed worker's registration was cleared; the last one left cleanly.
        assert app.store.list_workers() == []
    finally:
        app.store.close()
