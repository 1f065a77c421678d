"""PostgreSQL restarted under running workers: they reconnect and finish; nothing lost,
nothing doubled.

Three workers run 60 workflows × 10 transactional ledger steps while the server is taken
away twice: a clean restart (``fast``: every session is ended) and a crash of the server
(``immediate``: recovery from the WAL at the next start). Steps in flight fail with the
connection, the engine treats that as an outage (a pause, never a workflow failure), the
pools reconnect, and the LISTEN connections catch up. At the end every workflow completed
and the ledger is the history, row for row, exactly once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from romancy_nb.testing import eventually
from tests.crash.fleet import Fleet, check_exactly_once, client, ledger_count, ledger_database
from tests.crash.fleet_flows import ledger_flow
from tests.postgres_server import PostgresServer

INSTANCES = 60
STEPS = 10
TOTAL = INSTANCES * STEPS
PAUSE = 0.02


@pytest.mark.crash
async def test_workers_ride_out_server_restarts(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = ledger_database(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Fleet(url, logs, "--max-concurrent", "5")
    try:
        for _ in range(3):
            fleet.spawn()
        for worker in fleet.live:
            worker.serving()
        async with client(url) as app:
            ids = [
                await app.start(ledger_flow, STEPS, PAUSE, instance_id=f"wf-{i}")
                for i in range(INSTANCES)
            ]
            counts = []
            for mode in ("fast", "immediate"):
                before = ledger_count(url)
                await eventually(
                    lambda b=before: ledger_count(url) > b,
                    timeout=120,
                    interval=0.05,
                    message="the workers to make progress",
                )
                at = ledger_count(url)
                assert at < TOTAL, "the work ended before the restart: make it longer"
                await asyncio.to_thread(postgres_server.restart, mode)
                counts.append((mode, at))
            print(f"restarts at ledger counts {counts} of {TOTAL}")
            for iid in ids:
                await app.result(iid, timeout=300)
            check_exactly_once(url, app, ids, STEPS)
        for worker in fleet.live:
            assert worker.alive(), worker.output()
        fleet.terminate()
    except BaseException:
        print(fleet.output()[-20000:])
        raise
    finally:
        fleet.close()
