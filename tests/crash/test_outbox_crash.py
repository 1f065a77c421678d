"""The outbox under SIGKILL: the relaying worker killed mid-delivery, again and again.

Worker processes (``romancy-nb worker --app tests.crash.outbox_worker:app``) run
``INSTANCES`` workflows of ``STEPS`` steps, step n sending event n through the outbox, and
relay the outbox over HTTP to a receiver of this process (tests/edges/event_receiver.py)
that holds each request ``HOLD`` seconds, so a kill lands while requests are in flight.
Each round waits until the relayer delivers, then SIGKILLs the worker that leads the
``outbox`` role at a random moment and starts a replacement; the other worker takes over.

At the end every event written was delivered at least once (a kill mid-delivery sends the
events of its batch again: duplicates are allowed), the receiver saw nothing that was not
written, each instance's events first arrived in their order, and every row is delivered.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import pytest

import romancy_nb as rn
from romancy_nb.store import open_store
from romancy_nb.testing import eventually
from tests.crash.outbox_flows import EVENT_TYPE
from tests.edges.event_receiver import Arrival, EventReceiver
from tests.processes import WorkerProcess, crash_random, reaped

APP = "tests.crash.outbox_worker:app"
INSTANCES = 5
STEPS = 40
TOTAL = INSTANCES * STEPS
PAUSE = 0.01
"""Seconds each step takes before it sends its event."""
HOLD = 0.05
"""Seconds the receiver holds each request: an instance's 40 events take two seconds."""
KILLS = 4
MIN_KILLS_MID_DELIVERY = 2


@pytest.mark.crash
async def test_sigkill_of_the_relaying_worker_loses_no_event_and_keeps_the_order(
    store_url: str, tmp_path: Path
) -> None:
    seed, rng = crash_random()
    logs = tmp_path / "logs"
    logs.mkdir()
    receiver = EventReceiver(hold=HOLD)
    receiver.start()
    env = {"ROMANCY_DB": store_url, "OUTBOX_RECEIVER": receiver.url}
    workers: list[WorkerProcess] = []

    def spawn() -> WorkerProcess:
        """A worker started, not waited for: the others deliver while it starts."""
        worker = WorkerProcess(
            ["--app", APP, "--db", store_url], logs, f"worker-{len(workers)}", env=env
        )
        workers.append(worker)
        return worker

    def outbox_leader() -> WorkerProcess | None:
        """The live worker that leads the ``outbox`` role now: the one relaying."""
        held = store.leader("outbox")
        for worker in workers:
            if held and worker.alive() and worker.is_serving() and worker.serving() == held[0]:
                return worker
        return None

    store = open_store(store_url)
    try:
        with reaped(workers):
            async with rn.App(store_url, max_concurrent=0) as client:  # runs nothing itself
                spawn().serving()
                spawn().serving()
                for i in range(INSTANCES):
                    await client.start("outbox_crash_flow", STEPS, PAUSE, instance_id=f"n-{i}")

            kills_mid_delivery = 0
            for round_ in range(KILLS):
                before = len(receiver.all())
                await eventually(
                    lambda b=before: len(receiver.all()) >= b + 3,
                    timeout=30,  # a killed relayer's batch waiting out its lease (60 s) fails
                    message=f"round {round_}: the relayer delivering",
                )
                await asyncio.sleep(rng.uniform(0.0, 0.1))  # chaos: the moment of the kill
                relaying = await eventually(outbox_leader, timeout=60, message="an outbox leader")
                in_flight = receiver.in_flight
                assert relaying.kill() == -signal.SIGKILL
                kills_mid_delivery += in_flight > 0
                print(
                    f"round {round_}: killed {relaying.name} with {in_flight} request(s) in "
                    f"flight; {len(receiver.all())} arrivals, {len(store.list_outbox('pending'))} "
                    "pending"
                )
                spawn()
            assert kills_mid_delivery >= MIN_KILLS_MID_DELIVERY, (
                f"only {kills_mid_delivery} kill(s) landed mid-delivery (seed {seed})"
            )

            async with rn.App(store_url, max_concurrent=0) as client:
                for i in range(INSTANCES):
                    assert await client.result(f"n-{i}", timeout=120) == STEPS

            def settled() -> bool:
                rows = store.list_outbox(limit=10 * TOTAL)
                return len(rows) == TOTAL and all(row.status != "pending" for row in rows)

            await eventually(settled, timeout=120, message="every event settled")
            for worker in workers:
                if worker.alive():
                    assert worker.terminate() == 0, worker.output()
    finally:
        receiver.stop()
        rows = store.list_outbox(limit=10 * TOTAL)
        store.close()

    assert receiver.invalid == []
    assert [row.status for row in rows] == ["delivered"] * TOTAL
    written = {row.event_id: row for row in rows}
    assert sorted(  # each step sent its event once: none for a killed or replayed attempt
        (row.instance_id, row.step_id) for row in rows
    ) == sorted(
        (f"n-{i}", f"outbox_crash_send:{n}") for i in range(INSTANCES) for n in range(1, STEPS + 1)
    )
    arrivals = receiver.all()
    assert all(a.status == 202 and a.type == EVENT_TYPE for a in arrivals)
    assert {a.id for a in arrivals} == set(written)  # all delivered, nothing unwritten
    first: dict[str, Arrival] = {}
    for arrival in arrivals:
        first.setdefault(arrival.id, arrival)
    for i in range(INSTANCES):
        order = [a.data["n"] for a in first.values() if a.data["instance"] == f"n-{i}"]
        assert order == list(range(STEPS)), f"n-{i}'s events first arrived as {order}"
    duplicates = Counter(a.id for a in arrivals) - Counter(set(written))
    print(f"{len(arrivals)} arrivals for {TOTAL} events: {sum(duplicates.values())} duplicates")
