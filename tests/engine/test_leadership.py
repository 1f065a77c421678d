"""One leader per database runs the sweeps; leadership moves when the leader goes."""

from __future__ import annotations

import asyncio
import time

import romancy_nb as rn
from romancy_nb.engine.leadership import ROLE
from romancy_nb.store import WorkerRecord, open_store


def _app(url: str) -> rn.App:
    return rn.App(url, lease_seconds=0.6, sweep_interval=0.1)


def _leader(app: rn.App) -> str | None:
    held = app.store.leader(ROLE)
    return None if held is None else held[0]


async def test_one_of_two_workers_leads_and_the_other_takes_over_when_it_closes(
    store_url: str,
) -> None:
    first, second = _app(store_url), _app(store_url)
    await first.open()
    await second.open()
    try:
        assert _leader(first) == first.worker_id  # the first to ask
        await asyncio.sleep(0.5)  # several ticks: the lead is renewed, never shared
        assert _leader(second) == first.worker_id
        await first.close()  # resigns
        for _ in range(200):
            if _leader(second) == second.worker_id:
                break
            await asyncio.sleep(0.02)
        assert _leader(second) == second.worker_id
    finally:
        await first.close()
        await second.close()


def test_lead_is_renewed_by_its_holder_and_taken_only_after_expiry(store_url: str) -> None:
    store = open_store(store_url)
    try:
        store.migrate()
        now = time.time()
        assert store.leader(ROLE) is None
        assert store.lead(ROLE, "a", now, 10)
        assert not store.lead(ROLE, "b", now + 1, 10)
        assert store.lead(ROLE, "a", now + 5, 10)  # renewed: now held until now + 15
        assert not store.lead(ROLE, "b", now + 12, 10)
        assert store.lead(ROLE, "b", now + 16, 10)  # expired: b takes it
        assert store.leader(ROLE) == ("b", now + 26)
        store.resign(ROLE, "a")  # not a's any more: nothing happens
        assert store.leader(ROLE) == ("b", now + 26)
        store.resign(ROLE, "b")
        assert store.leader(ROLE) is None
    finally:
        store.close()


async def test_a_dead_leader_is_replaced_at_once_not_after_its_lease(store_url: str) -> None:
    store = open_store(store_url)
    try:
        store.migrate()
        now = time.time()
        # a worker on this host whose process is gone (pid 2**22 + 1 is never a live pid
        # here: above the kernel's pid_max default), holding a lease for an hour
        gone = WorkerRecord("gone-w", rn.engine.leases.HOST, 2**22 + 1, None, now, now)
        store.register_worker(gone)
        assert store.lead(ROLE, "gone-w", now, 3600)
    finally:
        store.close()
    async with _app(store_url) as app:
        assert _leader(app) == app.worker_id
