"""The outbox through the ``Store`` protocol, on every backend: events written with their
step (or not at all), leased in order per instance, settled by the lease holder."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from romancy_nb.store import InstanceRecord, StepRecord, Store, open_store
from romancy_nb.store.protocol import OutboxEvent, OutboxOutcome, OutboxRecord

OWNER = "worker-a"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    store = open_store(store_url)
    store.migrate()
    try:
        yield store
    finally:
        store.close()


def _instance(store: Store, instance_id: str, owner: str | None = OWNER) -> None:
    now = time.time()
    record = InstanceRecord(
        instance_id, "wf", "running", "{}", None, None, owner, None, None, now, now
    )
    assert store.create_instance(record)


def _step(instance_id: str, seq: int) -> StepRecord:
    now = time.time()
    return StepRecord(instance_id, seq, f"act:{seq}", "activity", "act", "completed", "[]",
                      "1", None, 1, now, now)  # fmt: skip


def _event(instance_id: str, name: str, seq: int = 1) -> OutboxEvent:
    attributes = '{"source":"/t","time":"2026-12-03T00:00:00+00:00","extensions":{}}'
    return OutboxEvent(
        f"{instance_id}-{name}", instance_id, f"act:{seq}", "t." + name, '{"n":1}', attributes,
        time.time(),
    )  # fmt: skip


def _ids(records: list[OutboxRecord]) -> list[str]:
    return [r.event_id for r in records]


def _settle(store: Store, owner: str, record: OutboxRecord, status: str, delay: float = 0) -> None:
    now = time.time()
    outcome = OutboxOutcome(record.seq, status, record.attempts + 1, now + delay, "why", now)
    store.settle_outbox(owner, [outcome])


def test_events_are_written_with_their_step_and_not_without_it(store: Store) -> None:
    _instance(store, "a")
    _instance(store, "b", owner="someone-else")
    assert store.record_step(_step("a", 1), OWNER, [_event("a", "x"), _event("a", "y")])
    # b's lease is not ours: neither its step nor its event is written
    assert not store.record_step(_step("b", 1), OWNER, [_event("b", "x")])

    pending = store.list_outbox(status="pending")
    assert _ids(pending) == ["a-y", "a-x"]  # newest first
    assert [s.step_id for s in store.load_history("a")] == ["act:1"]
    assert store.load_history("b") == []
    assert (pending[0].attempts, pending[0].last_error, pending[0].delivered_at) == (0, None, None)


def test_a_session_writes_events_in_its_transaction_and_a_rollback_drops_them(
    store: Store,
) -> None:
    _instance(store, "a")
    session = store.open_session()
    assert session.record_step(_step("a", 1), OWNER, [_event("a", "gone")])
    session.rollback()
    assert store.list_outbox() == []

    session = store.open_session()
    assert session.record_step(_step("a", 1), OWNER, [_event("a", "kept")])
    session.commit()
    assert _ids(store.list_outbox(instance_id="a")) == ["a-kept"]


def test_an_event_id_stored_already_is_stored_once(store: Store) -> None:
    _instance(store, "a")
    assert store.record_step(_step("a", 1), OWNER, [_event("a", "x")])
    assert store.record_step(_step("a", 2), OWNER, [_event("a", "x", seq=2)])
    assert len(store.list_outbox()) == 1


def test_claims_take_instances_in_order_and_lease_them_to_one_relayer(store: Store) -> None:
    _instance(store, "a")
    _instance(store, "b")
    store.record_step(_step("a", 1), OWNER, [_event("a", "1"), _event("a", "2")])
    store.record_step(_step("b", 1), OWNER, [_event("b", "1")])
    now = time.time()

    first = store.claim_outbox("relay-1", now, now + 60, limit=2)
    assert _ids(first) == ["a-1", "a-2"]  # oldest first, a prefix of a's events
    # a's first event is leased: another relayer takes nothing of a, only b
    assert _ids(store.claim_outbox("relay-2", now, now + 60, limit=10)) == ["b-1"]
    assert store.claim_outbox("relay-3", now, now + 60, limit=10) == []
    # once the leases run out, their events are anyone's again
    later = now + 61
    assert _ids(store.claim_outbox("relay-3", later, later + 60, limit=10)) == ["a-1", "a-2", "b-1"]


def test_an_instance_waits_behind_its_first_event_until_that_one_is_due(store: Store) -> None:
    _instance(store, "a")
    store.record_step(_step("a", 1), OWNER, [_event("a", "1"), _event("a", "2")])
    now = time.time()
    head, second = store.claim_outbox("relay", now, now + 60, limit=10)
    _settle(store, "relay", head, "pending", delay=30)  # to be retried in 30 s
    _settle(store, "relay", second, "pending")  # released, untried

    assert store.claim_outbox("relay", time.time(), time.time() + 60, limit=10) == []
    due = now + 31
    retried = store.claim_outbox("relay", due, due + 60, limit=10)
    assert _ids(retried) == ["a-1", "a-2"]
    assert (retried[0].attempts, retried[0].last_error) == (1, "why")


def test_settling_delivered_and_failed_events_ends_them(store: Store) -> None:
    _instance(store, "a")
    store.record_step(_step("a", 1), OWNER, [_event("a", "1"), _event("a", "2")])
    now = time.time()
    head, second = store.claim_outbox("relay", now, now + 60, limit=10)
    _settle(store, "relay", head, "failed")
    _settle(store, "relay", second, "delivered")

    assert store.claim_outbox("relay", now + 999, now + 999, limit=10) == []
    assert _ids(store.list_outbox(status="failed")) == ["a-1"]
    delivered = store.list_outbox(status="delivered")
    assert _ids(delivered) == ["a-2"] and delivered[0].delivered_at is not None


def test_only_the_lease_holder_reschedules_but_a_delivery_counts_from_anyone(
    store: Store,
) -> None:
    _instance(store, "a")
    store.record_step(_step("a", 1), OWNER, [_event("a", "1")])
    now = time.time()
    (event,) = store.claim_outbox("relay-1", now, now + 60, limit=10)

    _settle(store, "stale-relay", event, "pending", delay=600)  # not its lease: ignored
    (still,) = store.list_outbox()
    assert (still.attempts, still.status) == (0, "pending")
    _settle(store, "stale-relay", event, "delivered")  # it did reach the receiver
    assert store.list_outbox()[0].status == "delivered"


def test_releasing_a_gone_relayers_leases_frees_only_its_pending_events(store: Store) -> None:
    _instance(store, "a")
    _instance(store, "b")
    store.record_step(_step("a", 1), OWNER, [_event("a", "1"), _event("a", "2")])
    store.record_step(_step("b", 1), OWNER, [_event("b", "1")])
    now = time.time()
    first, _ = store.claim_outbox("gone", now, now + 600, limit=2)
    _settle(store, "gone", first, "delivered")  # it delivered one before it died
    store.claim_outbox("alive", now, now + 600, limit=10)  # b-1

    assert store.release_outbox("gone") == 1  # a-2 only: a-1 is delivered, b-1 not its own
    assert _ids(store.claim_outbox("next", now, now + 600, limit=10)) == ["a-2"]
    assert store.release_outbox("nobody") == 0
