"""The per-step statement sent from the event loop with libpq's own calls
(``store/postgres/prepared.py``): what it writes reads back exactly as the general path's,
it checks the lease, and its errors are the store's."""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from romancy_nb.errors import StoreError
from romancy_nb.store.postgres import prepared
from romancy_nb.store.postgres.store import PostgresStore
from romancy_nb.store.protocol import StepRecord
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


def test_a_nul_character_takes_the_general_path_and_its_error(pg_store: PostgresStore) -> None:
    record = instance("me")
    pg_store.create_instance(record)
    with_nul = step(record.instance_id, 1)._replace(name="a\x00b")
    with pytest.raises(prepared.NotAsText):
        prepared.as_text(with_nul)
    record_step = on_the_loop(pg_store, "record_step")
    with pytest.raises(StoreError) as refused:  # never silently cut at the NUL
        asyncio.run(record_step(with_nul, "me"))
    with pytest.raises(StoreError) as refused_on_a_thread:
        pg_store.record_step(with_nul, "me")
    assert type(refused.value) is type(refused_on_a_thread.value)
    assert pg_store.load_history(record.instance_id) == []


@pytest.mark.parametrize(
    "value", [0.1, 1 / 3, sys.float_info.max, sys.float_info.min, 5e-324, -0.0, 2**63 - 1]
)
def test_numbers_go_as_text_that_parses_back_to_the_same_value(value: float) -> None:
    (text,) = prepared.as_text([value])
    assert text is not None
    parsed = int(text) if isinstance(value, int) else float(text)
    assert parsed == value and math.copysign(1, parsed) == math.copysign(1, value)


@pytest.mark.parametrize("value", [True, b"bytes", object()])
def test_what_has_no_text_form_here_is_refused(value: object) -> None:
    with pytest.raises(prepared.NotAsText):
        prepared.as_text([value])


def test_a_statement_declares_as_many_types_as_it_has_placeholders() -> None:
    assert prepared.Statement("SELECT %s, %s", (25, 20)).numbered == b"SELECT $1, $2"
    for sql in ("SELECT %s", "SELECT %s, %s, %s"):
        with pytest.raises(ValueError, match="placeholders, 2 types"):
            _ = prepared.Statement(sql, (25, 20)).numbered
