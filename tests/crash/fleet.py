"""What the fleet tests share: a PostgreSQL database with a ledger, a fleet of workers
serving ``tests.crash.fleet_worker:app``, a client app, and the exactly-once check."""

from __future__ import annotations

import random
import signal
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import psycopg

import romancy_nb as rn
from romancy_nb.store import Store, open_store
from tests.conftest import BACKENDS
from tests.crash.fleet_flows import LEDGER_COLUMNS, registry
from tests.processes import WorkerProcess, stop_all
from tests.sql import create_ledger, postgres_rows

APP = "tests.crash.fleet_worker:app"


def ledger_database(tmp_path: Path) -> str:
    """A new database of the private PostgreSQL server, migrated, with the empty ledger."""
    url = BACKENDS["postgres"].new_database(tmp_path)
    store = open_store(url)  # romancy_nb's tables first: the user's table goes beside them
    try:
        store.migrate()
        setup = store.open_session()
        create_ledger(setup.connection, "ledger", LEDGER_COLUMNS)
        setup.commit()
    finally:
        store.close()
    return url


def ledger_count(url: str) -> int:
    """Rows in the ledger now (committed ones: a kill's uncommitted row is not there)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as connection:
        row = connection.execute("SELECT count(*) FROM ledger").fetchone()
    assert row is not None
    return int(row[0])


_STATE_QUERIES = {
    "instances": "SELECT instance_id, status, lock_owner, updated_at FROM workflow_instances "
    "ORDER BY instance_id",
    "waits": "SELECT instance_id, step_id, kind, channel, fire_at FROM waits ORDER BY 1, 2",
    "subscriptions": "SELECT instance_id, channel, mode, cursor FROM channel_subscriptions "
    "ORDER BY 1",
    "messages": "SELECT count(*), min(id), max(id) FROM channel_messages",
    "ledger": "SELECT count(*) FROM ledger",
    "history": "SELECT kind, status, count(*) FROM workflow_history GROUP BY 1, 2 ORDER BY 1, 2",
    "workers": "SELECT * FROM workers",
    "leaders": "SELECT * FROM leaders",
    "sessions": "SELECT pid, state, wait_event_type, wait_event, xact_start, "
    "left(query, 120) FROM pg_stat_activity WHERE datname = current_database() "
    "AND pid <> pg_backend_pid()",
    "ungranted locks": "SELECT pid, locktype, relation::regclass, mode FROM pg_locks "
    "WHERE NOT granted",
}


def database_state(url: str) -> str:
    """What the database holds now, table by table: printed when a fleet test fails, so a
    stall shows where every instance, wait and session stands."""
    lines = []
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as connection:
        for title, sql in _STATE_QUERIES.items():
            lines.append(f"--- {title}")
            lines.extend(repr(row) for row in connection.execute(sql).fetchall())
    return "\n".join(lines)


def leader(store: Store) -> str | None:
    """The worker that leads the sweeps now (None: nobody ever led)."""
    held = store.leader("sweeper")
    return None if held is None else held[0]


def status(store: Store, instance_id: str) -> str | None:
    """The instance's status now (None: no such instance)."""
    record = store.get_instance(instance_id)
    return None if record is None else record.status


def client(url: str) -> rn.App:
    """The test's own app: a client (``max_concurrent=0``) that starts instances for the
    workers and reads their results, never running one itself."""
    return rn.App(url, registry=registry, max_concurrent=0, sweep_interval=0.2)


class Fleet:
    """The workers of one test: started with the same arguments, killed, replaced."""

    def __init__(self, url: str, logs: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.url = url
        self.logs = logs
        self.args = ["--app", APP, *args]
        self.env = {"ROMANCY_DB": url, **(env or {})}
        self.started: list[WorkerProcess] = []
        self.live: list[WorkerProcess] = []

    def spawn(self, *extra: str, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(
            [*self.args, *extra],
            self.logs,
            f"worker-{len(self.started)}",
            env={**self.env, **(env or {})},
        )
        self.started.append(worker)
        self.live.append(worker)
        return worker

    def kill(self, worker: WorkerProcess) -> int:
        """SIGKILL one worker (reaped); its exit code."""
        self.live.remove(worker)
        return worker.kill()

    def pick(self, rng: random.Random) -> WorkerProcess:
        """A random live worker, serving or still starting."""
        return rng.choice(self.live)

    def others_serve(self, worker: WorkerProcess) -> bool:
        """Whether a live worker besides ``worker`` serves (killing it stalls nothing)."""
        return any(other.is_serving() for other in self.live if other is not worker)

    def replace(self, victim: WorkerProcess) -> WorkerProcess:
        """SIGKILL ``victim`` (reaped) and start another worker in its place."""
        code = self.kill(victim)
        assert code == -signal.SIGKILL, f"{victim.name} exited {code}:\n{victim.output()}"
        return self.spawn()

    def terminate(self) -> None:
        """Stop the live workers gracefully; each must exit 0."""
        for worker in list(self.live):
            code = worker.terminate()
            self.live.remove(worker)
            assert code == 0, f"{worker.name} exited {code}:\n{worker.output()}"

    def output(self) -> str:
        return "\n".join(worker.output() for worker in self.started)

    def close(self) -> None:
        """Kill whatever this fleet still runs (a test's ``finally``)."""
        stop_all(self.started)


def check_exactly_once(url: str, app: rn.App, instance_ids: Iterable[str], steps: int) -> None:
    """Each ``fleet_ledger_flow`` instance completed, and its ledger rows are its history:
    one row per completed step (none twice, none missing, none from an uncommitted step),
    with the value the step returned."""
    ledger = postgres_rows(url, "ledger")
    counts = Counter((iid, step_id) for iid, step_id, _ in ledger)
    duplicates = {key: n for key, n in counts.items() if n > 1}
    assert not duplicates, f"steps committed more than once: {duplicates}"
    history: dict[tuple[str, str], int] = {}
    for iid in instance_ids:
        info = app.get_instance(iid)
        assert info.status == "completed", (iid, info.status, info.error)
        assert info.output == sum(range(steps)), (iid, info.output)
        assert info.lock_owner is None, (iid, info.lock_owner)
        activities = [s for s in app.get_history(iid) if s.kind == "activity"]
        assert [(s.name, s.status) for s in activities] == [
            ("fleet_ledger_step", "completed")
        ] * steps, iid
        assert [s.output for s in activities] == list(range(steps)), iid
        history.update(((iid, s.step_id), s.output) for s in activities)
    assert {(iid, step_id): value for iid, step_id, value in ledger} == history
