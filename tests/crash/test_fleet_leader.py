"""The sweeper's leader is SIGKILLed: another worker leads, and a due timer still fires.

The workers hear of other processes' changes only through their sweeps
(``FLEET_NO_WATCH``), and the dead leader is the only one that ever held an alarm for the
timer: the one that ran the sleeping workflow, while the survivor was busy and had started
before the timer existed. So only the new leader's sweep can fire it.

Who runs what is arranged with ``--max-concurrent 1`` and holders (workflows that occupy a
worker's one slot until the test creates a file):

1. A starts alone and leads. A holder h1 is started: only A can take it.
2. B starts (A leads: B stands by). Holder h2: A is full, B takes it.
3. h1 is released; the sleeper starts: B is full, A runs it to its sleep (A's alarm).
4. h2 is released (B is free, and knows nothing of the timer). A is SIGKILLed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from romancy_nb.store import Store, open_store
from romancy_nb.testing import eventually
from tests.crash.fleet import Fleet, client, leader, ledger_database, status
from tests.crash.fleet_flows import holder, sleeper
from tests.sql import postgres_rows

LEASE = "1"
"""Seconds of the leader's lease (and of a worker's): a few of them is the takeover."""
SLEEP = 1.5


def _owner(store: Store, instance_id: str) -> str | None:
    record = store.get_instance(instance_id)
    return None if record is None else record.lock_owner


@pytest.mark.crash
async def test_a_killed_leader_is_replaced_and_its_timer_fires(tmp_path: Path) -> None:
    url = ledger_database(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Fleet(
        url,
        logs,
        "--max-concurrent",
        "1",
        env={"FLEET_NO_WATCH": "1", "FLEET_LEASE_SECONDS": LEASE},
    )
    store = open_store(url)
    h1, h2 = tmp_path / "h1", tmp_path / "h2"
    try:
        a = fleet.spawn()
        a_id = a.serving()
        await eventually(lambda: leader(store) == a_id, timeout=60, message="A to lead")
        async with client(url) as app:
            await app.start(holder, str(h1), instance_id="h1")
            await eventually(lambda: _owner(store, "h1") == a_id, timeout=60)
            b = fleet.spawn()
            b_id = b.serving()
            await app.start(holder, str(h2), instance_id="h2")
            await eventually(lambda: _owner(store, "h2") == b_id, timeout=60)
            h1.touch()
            await eventually(lambda: status(store, "h1") == "completed", timeout=60)
            # B's one slot is taken: A runs the sleeper until it sleeps.
            await app.start(sleeper, SLEEP, instance_id="s1")
            await eventually(lambda: status(store, "s1") == "waiting_for_timer", timeout=60)
        # The client is gone (it stood for leadership too); B is freed.
        h2.touch()
        await eventually(lambda: status(store, "h2") == "completed", timeout=60)
        assert leader(store) == a_id
        assert status(store, "s1") == "waiting_for_timer"

        fleet.kill(a)
        await eventually(lambda: leader(store) == b_id, timeout=60, message="B to take the lead")
        await eventually(
            lambda: status(store, "s1") == "completed",
            timeout=60,
            message="the new leader's sweep to fire the timer",
        )
        assert [(s.step_id, s.status) for s in store.load_history("s1")] == [
            ("sleep:1", "completed"),
            ("fleet_ledger_step:1", "completed"),
        ]
        assert postgres_rows(url, "ledger") == [("s1", "fleet_ledger_step:1", 1)]
        assert b.alive(), b.output()
        fleet.terminate()
    except BaseException:
        print(fleet.output())
        raise
    finally:
        store.close()
        fleet.close()


@pytest.mark.crash
async def test_a_client_never_leads_so_a_due_timer_still_fires(tmp_path: Path) -> None:
    """The client opens first (it would lead if it stood; its sweeps would wake nothing);
    of two workers, one runs the sleeper and is SIGKILLed in its sleep, the other is free
    and knows nothing of the timer."""
    url = ledger_database(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Fleet(
        url,
        logs,
        "--max-concurrent",
        "1",
        env={"FLEET_NO_WATCH": "1", "FLEET_LEASE_SECONDS": LEASE},
    )
    store = open_store(url)
    h1 = tmp_path / "h1"
    try:
        async with client(url) as app:
            workers = [fleet.spawn(), fleet.spawn()]
            ids = {worker.serving(): worker for worker in workers}
            await app.start(holder, str(h1), instance_id="h1")
            busy = await eventually(lambda: _owner(store, "h1"), timeout=60)
            await app.start(sleeper, SLEEP, instance_id="s1")  # the other one runs it
            await eventually(lambda: status(store, "s1") == "waiting_for_timer", timeout=60)
            h1.touch()
            await eventually(lambda: status(store, "h1") == "completed", timeout=60)
            (sleeping,) = [worker for worker_id, worker in ids.items() if worker_id != busy]
            assert leader(store) in ids  # a worker, not the client
            fleet.kill(sleeping)
            await eventually(
                lambda: status(store, "s1") == "completed",
                timeout=15,  # due in 1.5 s; a worker leading sweeps every 0.2 s
                message="the timer to fire",
            )
        fleet.terminate()
    finally:
        store.close()
        fleet.close()
