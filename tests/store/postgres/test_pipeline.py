"""The statements sent from the event loop with libpq's own calls
(``store/postgres/pipeline.py``): what the per-step statement writes reads back exactly,
it checks the lease, and its errors are the store's, as on a thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest

import romancy_nb as rn
from romancy_nb.errors import StoreError
from romancy_nb.store.postgres.pipeline import numbered
from romancy_nb.store.postgres.store import PostgresStore
from romancy_nb.store.protocol import MessageRecord, StepRecord
from tests.store.postgres.records import instance, step


def on_the_loop(store: PostgresStore, name: str) -> Callable[..., Awaitable[Any]]:
    call = store.loop_call(name)
    assert call is not None, f"{name} is made on the loop"
    return call


def test_a_step_written_on_the_loop_reads_back_exactly(pg_store: PostgresStore) -> None:
    record = instance("me")
    pg_store.create_instance(record)
    odd = StepRecord(
        record.instance_id, 2**40, "s:ü€😀'\"\\", "activity", "naïve", "completed",
        '{"x": "\\u0000 is JSON-escaped"}', None, "", 7, 0.1 + 0.2, 1767225600.123456789,
    )  # fmt: skip
    plain = step(record.instance_id, 1)
    record_step = on_the_loop(pg_store, "record_step")

    async def write() -> list[bool]:
        return [await record_step(s, "me") for s in (plain, odd)]

    assert asyncio.run(write()) == [True, True]
    assert pg_store.load_history(record.instance_id) == [plain, odd]


def test_a_step_on_the_loop_is_refused_without_the_lease(pg_store: PostgresStore) -> None:
    record = instance("someone else")
    pg_store.create_instance(record)
    record_step = on_the_loop(pg_store, "record_step")
    assert asyncio.run(record_step(step(record.instance_id, 1), "me")) is False
    assert pg_store.load_history(record.instance_id) == []


def test_a_server_error_on_the_loop_is_the_stores_error(pg_store: PostgresStore) -> None:
    record = instance("me")
    pg_store.create_instance(record)
    record_step = on_the_loop(pg_store, "record_step")

    async def twice() -> None:
        await record_step(step(record.instance_id, 1), "me")
        await record_step(step(record.instance_id, 1), "me")  # the same seq: a bug

    with pytest.raises(StoreError) as clash:
        asyncio.run(twice())
    assert not clash.value.transient and "workflow_history" in str(clash.value)
    # the connection that reported it stays usable, its statement still prepared
    assert asyncio.run(record_step(step(record.instance_id, 2), "me")) is True


def test_a_nul_character_is_refused_as_on_a_thread(pg_store: PostgresStore) -> None:
    record = instance("me")
    pg_store.create_instance(record)
    with_nul = step(record.instance_id, 1)._replace(name="a\x00b")
    record_step = on_the_loop(pg_store, "record_step")
    with pytest.raises(StoreError) as refused:  # never silently cut at the NUL
        asyncio.run(record_step(with_nul, "me"))
    with pytest.raises(StoreError) as refused_on_a_thread:
        pg_store.record_step(with_nul, "me")
    assert type(refused.value) is type(refused_on_a_thread.value)
    assert pg_store.load_history(record.instance_id) == []
    # the connection that refused it is still usable
    assert asyncio.run(record_step(step(record.instance_id, 1), "me")) is True


def test_an_outside_publish_on_the_loop_gives_the_message_id_once(
    pg_store: PostgresStore,
) -> None:
    publish = on_the_loop(pg_store, "publish")
    message = MessageRecord(0, "m-1", "orders", None, '{"n": 1}', "{}", None, 1.0)
    first = asyncio.run(publish(message))
    assert first > 0
    assert asyncio.run(publish(message)) == 0  # the same message id: stored once
    with pg_store.connect() as connection:
        stored = connection.execute("SELECT id, message_id FROM channel_messages").fetchall()
    assert stored == [(first, "m-1")]


def test_placeholders_become_numbered_parameters() -> None:
    assert numbered("SELECT %s, %s", 2) == b"SELECT $1, $2"
    for sql in ("SELECT %s", "SELECT %s, %s, %s"):
        with pytest.raises(ValueError, match="placeholders for 2 arguments"):
            numbered(sql, 2)


@rn.workflow
async def waits_for_a_parcel(ctx: rn.WorkflowContext) -> object:
    return (await ctx.wait_event("parcel.arrived")).data


async def test_a_wake_up_waiting_for_a_row_lock_leaves_the_event_loop_free(pg_url: str) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async with rn.App(pg_url) as app:
        iid = await app.start(waits_for_a_parcel)
        while app.get_instance(iid).status != "waiting_for_event":
            await asyncio.sleep(0.005)
        # another session holds the instance's row: the wake-up's lock waits for it
        with psycopg.connect(pg_url) as locker:
            locker.execute(
                "SELECT 1 FROM workflow_instances WHERE instance_id = %s FOR UPDATE", (iid,)
            )
            release = threading.Timer(1.0, locker.rollback)
            ticker = asyncio.create_task(tick())
            try:
                release.start()
                before = ticks
                await app.send_event("parcel.arrived", "box")  # may wake it before returning
                assert await app.result(iid, timeout=60) == "box"
                ran_meanwhile = ticks - before
            finally:
                release.join()
                ticker.cancel()
    # the loop went on while the wake-up waited (a wait on the loop would have frozen it)
    assert ran_meanwhile >= 10
