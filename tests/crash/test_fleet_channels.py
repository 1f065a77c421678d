"""Competing consumers in several worker processes: every message consumed exactly once.

Nine ``fleet_consumer`` instances subscribe to one competing channel; three workers run
them, and each message a consumer takes goes through a transactional step into the
ledger. The client publishes 300 messages in bursts, a random worker is SIGKILLed (and
replaced) after each of the first two, and nine ``"stop"`` messages end the consumers
(FIFO: after every job). None of the 300 may be lost or taken twice: the consumers'
results together are exactly the 300, the ledger holds each once, and each consumer's
ledger rows are its history.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from romancy_nb.testing import eventually
from tests.crash.fleet import Fleet, client, database_state, ledger_count, ledger_database
from tests.crash.fleet_flows import consumer
from tests.processes import crash_random
from tests.sql import postgres_rows

CONSUMERS = 9
MESSAGES = 300
BURSTS = 3
CHANNEL = "fleet.jobs"


@pytest.mark.crash
async def test_competing_consumers_in_three_workers_take_each_message_once(
    tmp_path: Path,
) -> None:
    _, rng = crash_random()
    url = ledger_database(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Fleet(url, logs)
    try:
        for _ in range(3):
            fleet.spawn()
        for worker in fleet.live:
            worker.serving()
        async with client(url) as app:
            ids = [
                await app.start(consumer, CHANNEL, instance_id=f"c-{i}") for i in range(CONSUMERS)
            ]
            per_burst = MESSAGES // BURSTS
            for burst in range(BURSTS):
                # counted before publishing: the consumers may take the whole burst before
                # a count after it is made, and then the ledger never grows past it
                before = ledger_count(url)
                for n in range(burst * per_burst, (burst + 1) * per_burst):
                    await app.publish(CHANNEL, n)
                if burst < BURSTS - 1:
                    await eventually(
                        lambda b=before: ledger_count(url) > b,
                        timeout=120,
                        interval=0.02,
                        message="the consumers to take messages",
                    )
                    await asyncio.sleep(rng.uniform(0.0, 0.2))  # chaos: a random moment
                    fleet.replace(fleet.pick(rng))
            for _ in ids:
                await app.publish(CHANNEL, "stop")
            results = {iid: await app.result(iid, timeout=300) for iid in ids}
            histories = {iid: app.get_history(iid) for iid in ids}

        taken = [n for result in results.values() for n in result]
        assert sorted(taken) == list(range(MESSAGES)), Counter(taken).most_common(3)
        assert sum(1 for result in results.values() if result) > 1  # the work was shared
        ledger = postgres_rows(url, "ledger")
        assert sorted(value for _, _, value in ledger) == list(range(MESSAGES))
        for iid in ids:
            steps = [s for s in histories[iid] if s.kind == "activity"]
            assert all(s.status == "completed" for s in steps), iid
            rows = [row for row in ledger if row[0] == iid]
            assert sorted(rows) == sorted((iid, s.step_id, s.output) for s in steps), iid
            assert [s.output for s in steps] == results[iid]
        fleet.terminate()
    except BaseException:
        print(fleet.output()[-20000:])
        print(database_state(url))
        raise
    finally:
        fleet.close()
