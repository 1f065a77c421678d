"""Two (or three) OS processes share one database file: wake-ups cross between them.

The worker subprocesses define the workflows; this test process does not (its App has an
empty registry), so every wake-up it causes must be noticed by the workers' change
watchers — their sweep interval (30 s) is far longer than the test's timeouts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import romancy_nb as rn
from romancy_nb.testing import eventually

WORKER = Path(__file__).with_name("waiting_worker.py")


class Worker:
    def __init__(self, plan: dict) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(plan)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline() if self.process.stdout else ""
        if line.strip() != "ready":
            self.process.kill()
            raise AssertionError(f"worker did not start: {line!r} {self.process.stderr.read()}")

    def finish(self, timeout: float = 60) -> None:
        _, err = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, err

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill()


def _outsider(store_url: str) -> rn.App:
    """An app in this process that knows none of the workers' workflows."""
    return rn.App(store_url, registry=rn.Registry())


async def test_an_event_sent_here_resumes_a_workflow_waiting_in_another_process(
    store_url: str, workers: list[Worker]
) -> None:
    async with _outsider(store_url) as app:
        app.store.migrate()
        worker = Worker(
            {"db": store_url, "start": [["xp_wait_event", "xp-1", []]], "await": ["xp-1"]}
        )
        workers.append(worker)
        await eventually(lambda: app.get_instance("xp-1").status == "waiting_for_event")
        await app.send_event("xp.go", {"n": 1})
        result = await app.result("xp-1", timeout=20)
        assert result == {"data": {"n": 1}, "pid": worker.process.pid}
        worker.finish()


async def test_a_timer_set_here_fires_in_another_process(
    store_url: str, workers: list[Worker]
) -> None:
    # The worker starts first, knowing of no timer; this process starts the sleep, then
    # closes before it fires: only the worker can fire it, told by its watcher.
    registry = rn.Registry()
    async with _outsider(store_url) as observer:
        worker = Worker({"db": store_url, "await": ["xp-sleep"]})
        workers.append(worker)
        from tests.engine import waiting_worker

        registry.add_workflow(waiting_worker.xp_sleep)
        async with rn.App(store_url, registry=registry) as starter:
            # long enough for this app to close first, also on a store whose close takes
            # a few round trips (PostgreSQL: the pool and the watcher's connection)
            await starter.start(waiting_worker.xp_sleep, 1.0, instance_id="xp-sleep")
            await eventually(lambda: starter.get_instance("xp-sleep").status != "running")
        started = time.time()
        result = await observer.result("xp-sleep", timeout=20)
        assert result == {"pid": worker.process.pid}
        history = observer.get_history("xp-sleep")
        assert history[0].step_id == "sleep:1" and history[0].finished_at.timestamp() >= started
        worker.finish()


async def test_competing_consumers_in_two_processes_take_each_message_once(
    store_url: str, workers: list[Worker]
) -> None:
    channel = "xp.jobs"
    async with _outsider(store_url) as app:
        app.store.migrate()
        groups = [[f"xp-c{p}-{i}" for i in range(5)] for p in range(2)]
        for ids in groups:
            plan = {
                "db": store_url,
                "start": [["xp_consumer", iid, [channel]] for iid in ids],
                "await": ids,
            }
            workers.append(Worker(plan))
        everyone = [iid for ids in groups for iid in ids]
        for iid in everyone:
            await eventually(lambda iid=iid: app.get_instance(iid).status == "waiting_for_message")
        for n in range(1000):
            await app.publish(channel, n)
        for _ in everyone:
            await app.publish(channel, "stop")
        results = [await app.result(iid, timeout=60) for iid in everyone]
        taken = [n for result in results for n in result]
        assert sorted(taken) == list(range(1000))  # each message exactly once
        for worker in workers:
            worker.finish()
