"""Many workers on one PostgreSQL database at once, each on its own store (its own pool):
claims never overlap, a competing message is consumed once, one leader per role."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest

from romancy_nb.store.postgres.store import PostgresStore
from romancy_nb.store.protocol import MessageRecord, WaitSpec, WorkerRecord
from tests.store.postgres.records import instance, step

WORKERS = 4
_MESSAGE_COLUMNS = (
    "id", "message_id", "channel", "target_instance_id", "data", "metadata",
    "sender_instance_id", "created_at",
)  # fmt: skip
T = TypeVar("T")


@pytest.fixture
def stores(pg_url: str, pg_store: PostgresStore) -> Iterator[list[PostgresStore]]:
    """One store per worker, all on the migrated database of ``pg_store``."""
    opened = [PostgresStore(pg_url) for _ in range(WORKERS)]
    yield opened
    for store in opened:
        store.close()


def _together(work: Callable[[int, PostgresStore], T], stores: list[PostgresStore]) -> list[T]:
    """``work(n, store)`` on every store at the same moment, one thread each."""
    start = threading.Barrier(len(stores))

    def run(n: int) -> T:
        start.wait()
        return work(n, stores[n])

    with ThreadPoolExecutor(len(stores)) as pool:
        return list(pool.map(run, range(len(stores))))


def test_claimers_at_once_never_claim_the_same_instance(
    pg_store: PostgresStore, stores: list[PostgresStore]
) -> None:
    ids = set()
    for _ in range(200):
        record = instance(None)
        pg_store.create_instance(record)
        ids.add(record.instance_id)
    pg_store.create_instance(instance(None, workflow="elsewhere"))  # not ours to claim
    now = time.time()
    for n in range(WORKERS):  # registered: what they claim is theirs, not an orphan's
        pg_store.register_worker(WorkerRecord(f"w{n}", "host", n, None, now, now))

    def claim_all(n: int, store: PostgresStore) -> list[str]:
        mine: list[str] = []
        while batch := store.claim_runnable(f"w{n}", [], ["flow"], [], 7):
            assert [r.lock_owner for r in batch] == [f"w{n}"] * len(batch)
            assert batch == sorted(batch, key=lambda r: r.created_at)  # oldest first
            mine.extend(r.instance_id for r in batch)
        return mine

    claimed = _together(claim_all, stores)
    every = [iid for mine in claimed for iid in mine]
    assert Counter(every).most_common(1)[0][1] == 1  # nobody claimed one twice
    assert set(every) == ids


def test_a_claim_skips_a_locked_instance_instead_of_waiting(pg_store: PostgresStore) -> None:
    now = time.time()
    pg_store.register_worker(WorkerRecord("me", "host", 1, None, now, now))
    locked, free = instance(None), instance(None)
    for record in (locked, free):
        pg_store.create_instance(record)
    session = pg_store.open_session()  # another transaction holds one row (a claim, a step)
    try:
        session.connection.execute(
            "SELECT 1 FROM workflow_instances WHERE instance_id = %s FOR UPDATE",
            (locked.instance_id,),
        )
        claimed = pg_store.claim_runnable("me", [], ["flow"], [], 10)
        assert [r.instance_id for r in claimed] == [free.instance_id]
    finally:
        session.rollback()
    assert [r.instance_id for r in pg_store.claim_runnable("me", [], ["flow"], [], 10)] == [
        locked.instance_id
    ]


def test_claims_take_instances_of_dead_and_unregistered_workers_only(
    pg_store: PostgresStore,
) -> None:
    now = time.time()
    for worker in ("alive", "dead"):
        pg_store.register_worker(WorkerRecord(worker, "host", 1, None, now, now))
    held = {owner: instance(owner) for owner in ("alive", "dead", "gone", None)}
    for record in held.values():
        pg_store.create_instance(record)
    excluded = instance(None)
    pg_store.create_instance(excluded)
    claimed = pg_store.claim_runnable("me", ["dead"], ["flow"], [excluded.instance_id], 10)
    assert {r.instance_id for r in claimed} == {
        held[owner].instance_id for owner in ("dead", "gone", None)
    }


def test_competing_consumers_take_each_message_exactly_once(
    pg_store: PostgresStore, stores: list[PostgresStore]
) -> None:
    consumers = [instance(f"w{n}") for n in range(WORKERS)]
    for record in consumers:
        pg_store.create_instance(record)
        pg_store.subscribe(
            record.instance_id, record.lock_owner or "", "jobs", "competing",
            step(record.instance_id, 1, kind="subscribe"),
        )  # fmt: skip
    published = [
        pg_store.publish(MessageRecord(0, f"job-{n}", "jobs", None, str(n), "{}", None, 0))
        for n in range(300)
    ]

    def consume(n: int, store: PostgresStore) -> list[str]:
        record = consumers[n]
        taken: list[str] = []
        seq = 2
        while True:
            wait = WaitSpec(f"receive:{seq}", "receive", "jobs", None, "jobs")
            got = store.take_message(record.instance_id, f"w{n}", wait, seq, time.time())
            if got is None:
                return taken
            assert got.output is not None
            taken.append(json.loads(got.output)["id"])
            seq += 1

    taken = _together(consume, stores)
    every = [message for mine in taken for message in mine]
    assert sorted(every) == sorted(f"job-{n}" for n in range(300))  # each exactly once
    assert len(set(published)) == 300 and published == sorted(published)
    assert pg_store.read_table("channel_messages") == ([*_MESSAGE_COLUMNS], [])


def test_waking_waiters_at_once_wakes_one_per_message(
    pg_store: PostgresStore, stores: list[PostgresStore]
) -> None:
    waiters = [instance("starter") for _ in range(20)]
    wait = WaitSpec("receive:2", "receive", "jobs", None, "jobs")
    for record in waiters:
        pg_store.create_instance(record)
        pg_store.subscribe(
            record.instance_id, "starter", "jobs", "competing",
            step(record.instance_id, 1, kind="subscribe"),
        )  # fmt: skip
        suspended = pg_store.suspend(
            record.instance_id, "starter", "waiting_for_message", [wait], 2, time.time()
        )
        assert suspended is None
    for n in range(5):
        pg_store.publish(MessageRecord(0, f"job-{n}", "jobs", None, str(n), "{}", None, 0))

    def wake_all(n: int, store: PostgresStore) -> list[str]:
        # every worker tries every waiter: each wake either wins the instance or sees it
        # leased, and only a waiter that got a message runs
        return [
            r.instance_id
            for r in waiters
            if store.wake(r.instance_id, wait.step_id, f"w{n}", time.time())
        ]

    woken = [iid for mine in _together(wake_all, stores) for iid in mine]
    assert len(woken) == len(set(woken)) == 5  # one lease per instance, one per message
    outputs = [pg_store.load_history(iid)[-1].output or "" for iid in woken]
    assert sorted(json.loads(o)["id"] for o in outputs) == [f"job-{n}" for n in range(5)]
    for iid in woken:
        now_running = pg_store.get_instance(iid)
        assert now_running is not None and now_running.status == "running"
        assert now_running.lock_owner is not None and now_running.lock_owner.startswith("w")


def test_one_leader_per_role_until_it_resigns_or_its_lease_expires(
    pg_store: PostgresStore, stores: list[PostgresStore]
) -> None:
    now = time.time()
    won = _together(lambda n, store: store.lead("sweeper", f"w{n}", now, 30), stores)
    assert won.count(True) == 1
    leader = f"w{won.index(True)}"
    other = next(f"w{n}" for n in range(WORKERS) if f"w{n}" != leader)
    assert pg_store.leader("sweeper") == (leader, now + 30)
    assert not pg_store.lead("sweeper", other, now + 1, 30)  # its lease runs
    assert pg_store.lead("sweeper", leader, now + 1, 30)  # renewed by its holder
    assert pg_store.leader("sweeper") == (leader, now + 31)
    assert pg_store.lead("sweeper", other, now + 32, 30)  # expired: taken over
    assert pg_store.leader("sweeper") == (other, now + 62)
    pg_store.resign("sweeper", leader)  # not the holder: nothing happens
    assert pg_store.leader("sweeper") == (other, now + 62)
    pg_store.resign("sweeper", other)
    assert pg_store.leader("sweeper") is None
    assert pg_store.lead("sweeper", leader, now + 33, 30)  # at once, no expiry to wait for
    assert pg_store.leader("other role") is None
