"""Three workers on one PostgreSQL database, SIGKILLed at random moments and replaced.

A client app (``max_concurrent=0``: it only stores the instances) starts 300 workflows of
10 transactional activities; three ``romancy-nb worker --app`` processes claim them
(``--max-concurrent`` keeps them sharing the work, so every kill interrupts some). A random
worker is SIGKILLed at a random moment, many times, and a new one started each time: its
instances move to the others (claimed with ``FOR UPDATE SKIP LOCKED``) or to the newcomer.
At the end every workflow completed, the ledger holds exactly one row per activity (a
step committed twice would be two rows: the ledger has no UNIQUE constraint), and history
and ledger agree row for row.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from romancy_nb.testing import eventually
from tests.crash.fleet import Fleet, check_exactly_once, client, ledger_count, ledger_database
from tests.crash.fleet_flows import ledger_flow
from tests.processes import crash_random

WORKERS = 3
INSTANCES = 300
STEPS = 10
TOTAL = INSTANCES * STEPS
PAUSE = 0.03  # per half of each step (outside and inside its transaction)
MAX_CONCURRENT = "5"
KILLS = 16
MIN_KILLS_IN_PROGRESS = 10


@pytest.mark.crash
async def test_random_sigkills_of_three_workers_keep_every_step_exactly_once(
    tmp_path: Path,
) -> None:
    seed, rng = crash_random()
    url = ledger_database(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Fleet(url, logs, "--max-concurrent", MAX_CONCURRENT)
    try:
        for _ in range(WORKERS):
            fleet.spawn()
        for worker in fleet.live:
            worker.serving()
        async with client(url) as app:
            ids = [
                await app.start(ledger_flow, STEPS, PAUSE, instance_id=f"wf-{i}")
                for i in range(INSTANCES)
            ]
            began = time.monotonic()
            in_progress = 0
            for kill in range(KILLS):
                before = ledger_count(url)
                victim = fleet.pick(rng)
                blind = kill % 4 == 3
                # Someone else must be serving, so that every kill lands while work goes on;
                # a blind kill does not wait for progress, and may hit a worker starting up.
                await eventually(
                    lambda v=victim, b=before, blind=blind: (
                        fleet.others_serve(v) and (blind or ledger_count(url) > b)
                    ),
                    timeout=120,
                    interval=0.05,
                    message="another worker serving and making progress",
                )
                await asyncio.sleep(rng.uniform(0.0, 0.3))  # chaos: a random moment
                at = ledger_count(url)
                if at >= TOTAL:
                    break
                new = fleet.replace(victim)
                in_progress += at > before
                print(
                    f"kill {kill} at +{time.monotonic() - began:.2f} s "
                    f"{'(blind) ' if blind else ''}of {victim.name}"
                    f"{'' if victim.is_serving() else ' (starting)'}: ledger {before} -> {at} "
                    f"of {TOTAL}; {new.name} started"
                )
            assert in_progress >= MIN_KILLS_IN_PROGRESS, (
                f"only {in_progress} kill(s) landed while work was in progress (seed "
                f"{seed}); the workload is too short for this machine"
            )
            for iid in ids:
                await app.result(iid, timeout=300)
            print(f"all {INSTANCES} completed at +{time.monotonic() - began:.2f} s")
            check_exactly_once(url, app, ids, STEPS)
            # The leader forgets the killed workers: only the live ones (and this client)
            # stay registered.
            live = {worker.serving() for worker in fleet.live} | {app.worker_id}
            await eventually(
                lambda: {w.worker_id for w in app.store.list_workers()} == live,
                timeout=60,
            )
        fleet.terminate()
    except BaseException:
        print(fleet.output()[-20000:])
        raise
    finally:
        fleet.close()
