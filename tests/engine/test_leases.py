"""Leases: who may take over an instance, and when."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import romancy_nb as rn
from romancy_nb.engine import leases
from romancy_nb.store import WorkerRecord
from romancy_nb.testing import eventually

runs: list[str] = []
release = {}


@rn.activity
async def ls_long(ctx: rn.ActivityContext) -> str:
    runs.append(ctx.instance_id)
    await release["go"].wait()
    return "done"


@rn.workflow
async def ls_flow(ctx: rn.WorkflowContext) -> str:
    return await ls_long(ctx)


def _worker(host: str, pid: int, heartbeat: float, proc_start: str | None = None) -> WorkerRecord:
    return WorkerRecord(f"{host}:{pid}:test", host, pid, proc_start, heartbeat, heartbeat)


def test_same_host_liveness_is_the_process() -> None:
    me = os.getpid()
    now = time.time()
    assert leases.is_alive(_worker(leases.HOST, me, 0, leases.process_start(me)), now, 15)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert not leases.is_alive(_worker(leases.HOST, int(dead.stdout), now), now, 15)
    # A reused pid (another start time) is not the worker that held the lease.
    assert not leases.is_alive(_worker(leases.HOST, me, now, "1"), now, 15)


def test_other_host_liveness_is_the_heartbeat() -> None:
    now = time.time()
    assert leases.is_alive(_worker("elsewhere", 1, now - 5), now, 15)
    assert not leases.is_alive(_worker("elsewhere", 1, now - 16), now, 15)


async def _hold_with_foreign_worker(app: rn.App, heartbeat: float) -> str:
    """An instance held by a worker on another host whose last heartbeat was ``heartbeat``."""
    release["go"] = asyncio.Event()
    iid = await app.start(ls_flow)
    await eventually(lambda: iid in runs)
    await app.close()  # releases the lock; hand it to the foreign worker
    store = rn.App(app.url).store
    store.migrate()
    foreign = _worker("elsewhere", 4242, heartbeat)
    store.register_worker(foreign)
    assert store.claim_instance(iid, foreign.worker_id, None)
    store.close()
    return iid


async def test_a_live_foreign_lease_is_respected_and_an_expired_one_taken(store_url: str) -> None:
    runs.clear()
    iid = await _hold_with_foreign_worker(rn.App(store_url), time.time() + 3600)
    release["go"].set()
    async with rn.App(store_url, lease_seconds=15) as app:
        assert app.get_instance(iid).lock_owner == "elsewhere:4242:test"
        assert runs == [iid]  # not resumed: the other worker is alive
    iid2 = await _hold_with_foreign_worker(rn.App(store_url), time.time() - 60)
    release["go"].set()
    async with rn.App(store_url, lease_seconds=15) as app:
        assert await app.result(iid2, timeout=30) == "done"  # lease expired: taken on open


async def test_heartbeat_renews_while_a_long_activity_runs(store_url: str) -> None:
    runs.clear()
    release["go"] = asyncio.Event()
    async with rn.App(store_url, lease_seconds=0.3, sweep_interval=0.05) as app:
        iid = await app.start(ls_flow)
        await eventually(lambda: iid in runs)
        first = app.store.list_workers()[0].heartbeat_at
        await eventually(lambda: app.store.list_workers()[0].heartbeat_at > first + 0.3)
        # Seen from another host the worker is alive, after more than a lease has passed.
        me = next(w for w in app.store.list_workers() if w.worker_id == app.worker_id)
        assert leases.is_alive(me._replace(host="elsewhere"), time.time(), 0.3)
        assert app.get_instance(iid).lock_owner == app.worker_id
        release["go"].set()
        assert await app.result(iid) == "done"
    assert runs == [iid]
