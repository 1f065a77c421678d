"""Many workers on one database: claiming runnable instances, capacity, clients, draining.

Two apps in this process stand for two workers (each registers itself and claims through
``Store.claim_runnable``); the store's rows are the evidence of who ran what.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import romancy_nb as rn
from romancy_nb.store import InstanceRecord, WorkerRecord, open_store
from tests.conftest import FAST_RETRY

running_now: set[str] = set()
most_at_once = 0
ran_by: dict[str, list[str]] = {}
gate = asyncio.Event()


@rn.activity(transactional=False)
async def claim_work(ctx: rn.ActivityContext, tag: str, hold: bool) -> str:
    global most_at_once
    running_now.add(ctx.instance_id)
    most_at_once = max(most_at_once, len(running_now))
    ran_by.setdefault(ctx.instance_id, []).append(tag)
    try:
        if hold:
            await gate.wait()
        else:
            await asyncio.sleep(0.01)
    finally:
        running_now.discard(ctx.instance_id)
    return tag


@rn.workflow
async def claim_flow(ctx: rn.WorkflowContext, tag: str, hold: bool = False) -> str:
    return await claim_work(ctx, tag, hold)


@pytest.fixture(autouse=True)
def _fresh_state() -> None:
    global most_at_once, gate
    running_now.clear()
    ran_by.clear()
    most_at_once = 0
    gate = asyncio.Event()  # an Event belongs to the loop it is first awaited on


@rn.workflow
async def event_flow(ctx: rn.WorkflowContext, event_type: str) -> object:
    return (await ctx.wait_event(event_type)).data


def _app(url: str, **options: object) -> rn.App:
    return rn.App(url, default_retry=FAST_RETRY, lease_seconds=0.6, **options)  # type: ignore[arg-type]


async def test_a_worker_runs_at_most_max_concurrent_and_takes_queued_starts_later(
    store_url: str,
) -> None:
    async with _app(store_url, max_concurrent=2) as app:
        # every run holds until two run at once: the cap is reached, whatever the timing
        ids = [await app.start(claim_flow, f"t{n}", True) for n in range(7)]
        while len(running_now) < 2:
            await asyncio.sleep(0.005)
        gate.set()
        results = [await app.result(iid, timeout=60) for iid in ids]
    assert results == [f"t{n}" for n in range(7)]
    assert most_at_once == 2, ran_by  # the cap was reached, never passed
    assert all(len(tags) == 1 for tags in ran_by.values())


@pytest.mark.parametrize("sender", ["this app", "another app"])
async def test_an_event_for_a_full_worker_wakes_its_waiter_when_a_run_ends(
    store_url: str, sender: str
) -> None:
    # no sweep in the test's time: only the worker's own look, once it has room, wakes it
    async with _app(store_url, max_concurrent=1, sweep_interval=3600) as worker:
        waiting = await worker.start(event_flow, "full.worker")
        while worker.get_instance(waiting).status != "waiting_for_event":
            await asyncio.sleep(0.005)
        busy = await worker.start(claim_flow, "busy", True)
        while busy not in running_now:
            await asyncio.sleep(0.005)
        if sender == "this app":
            await worker.send_event("full.worker", 7)
        else:
            async with _app(store_url, max_concurrent=0) as client:
                await client.send_event("full.worker", 7)
        await asyncio.sleep(0.3)  # seen, and left for lack of room
        assert worker.get_instance(waiting).status == "waiting_for_event"
        gate.set()
        assert await worker.result(busy, timeout=60) == "busy"
        assert await worker.result(waiting, timeout=60) == 7


async def test_a_client_runs_nothing_and_a_worker_runs_what_it_started(store_url: str) -> None:
    async with _app(store_url, max_concurrent=0) as client:
        iid = await client.start(claim_flow, "from-client")
        await asyncio.sleep(0.2)
        record = client.get_instance(iid)
        assert (record.status, client.running()) == ("running", [])
        assert client.store.get_instance(iid).lock_owner is None  # type: ignore[union-attr]
        async with _app(store_url) as worker:
            assert await worker.result(iid, timeout=60) == "from-client"
            assert worker.get_instance(iid).status == "completed"
        assert client.running() == []
    assert ran_by == {iid: ["from-client"]}


async def test_a_released_instance_moves_to_the_other_worker(store_url: str) -> None:
    async with _app(store_url) as second:
        first = _app(store_url)
        await first.open()
        iid = await first.start(claim_flow, "held", True)
        while iid not in running_now:
            await asyncio.sleep(0.005)
        await first.close()  # stops the run and releases its lease: the other takes it
        gate.set()
        assert await second.result(iid, timeout=60) == "held"
    assert ran_by[iid] == ["held", "held"]  # stopped mid-activity, so it ran again


async def test_drain_lets_runs_finish_and_sends_new_starts_elsewhere(store_url: str) -> None:
    async with _app(store_url) as other:
        app = _app(store_url)
        await app.open()
        iid = await app.start(claim_flow, "draining", True)
        while iid not in running_now:
            await asyncio.sleep(0.005)
        drained = asyncio.ensure_future(app.drain(60))
        await asyncio.sleep(0.05)
        late = await app.start(claim_flow, "late")  # taken by the other worker
        assert not drained.done()
        gate.set()
        assert await drained == []
        assert app.get_instance(iid).status == "completed"
        assert await other.result(late, timeout=60) == "late"
        await app.close()
    assert ran_by[iid] == ["draining"]


async def test_drain_returns_what_is_still_running_after_the_timeout(store_url: str) -> None:
    async with _app(store_url) as app:
        iid = await app.start(claim_flow, "stuck", True)
        while iid not in running_now:
            await asyncio.sleep(0.005)
        assert await app.drain(0.05) == [iid]
        gate.set()


def _record(iid: str, owner: str | None, created: float) -> InstanceRecord:
    return InstanceRecord(
        iid, "claim_flow", "running", '{"tag": "x"}', None, None, owner, None, None,
        created, created,
    )  # fmt: skip


def _worker(worker_id: str, now: float) -> WorkerRecord:
    """A live worker on another host (its heartbeat is fresh)."""
    return WorkerRecord(worker_id, "elsewhere", 1, None, now, now)


def test_claim_runnable_takes_unowned_and_dead_holders_oldest_first(store_url: str) -> None:
    store = open_store(store_url)
    try:
        store.migrate()
        now = time.time()
        for worker_id in ("live-w", "me", "other"):
            store.register_worker(_worker(worker_id, now))
        for n, owner in enumerate([None, "dead-w", "live-w", None, "unregistered-w", None]):
            assert store.create_instance(_record(f"c{n}", owner, now + n))
        claimed = store.claim_runnable("me", ["dead-w"], ["claim_flow"], ["c5"], 3)
        assert [r.instance_id for r in claimed] == ["c0", "c1", "c3"]
        assert {r.lock_owner for r in claimed} == {"me"}
        rest = store.claim_runnable("other", [], ["claim_flow"], [], 10)
        assert [r.instance_id for r in rest] == ["c4", "c5"]  # never c2: its holder lives
        assert store.claim_runnable("other", [], ["another_flow"], [], 10) == []
        assert store.claim_runnable("other", [], ["claim_flow"], [], 0) == []
        assert store.get_instance("c2").lock_owner == "live-w"  # type: ignore[union-attr]
    finally:
        store.close()


def test_concurrent_claims_never_take_the_same_instance(store_url: str) -> None:
    stores = [open_store(store_url) for _ in range(4)]
    try:
        stores[0].migrate()
        now = time.time()
        for n in range(200):
            assert stores[0].create_instance(_record(f"k{n:03}", None, now + n / 1000))
        for index in range(4):
            stores[0].register_worker(_worker(f"w{index}", now))

        def claim_all(index: int) -> list[str]:
            taken: list[str] = []
            while batch := stores[index].claim_runnable(f"w{index}", [], ["claim_flow"], [], 7):
                taken += [r.instance_id for r in batch]
            return taken

        with ThreadPoolExecutor(4) as pool:
            claims = list(pool.map(claim_all, range(4)))
        every = [iid for taken in claims for iid in taken]
        assert sorted(every) == [f"k{n:03}" for n in range(200)]  # each exactly once
    finally:
        for store in stores:
            store.close()
