"""Starting, awaiting and typing workflows and activities."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import pandas as pd
import pytest
from pydantic import BaseModel

import romancy_nb as rn


class Item(BaseModel):
    sku: str
    qty: int


@dataclasses.dataclass
class Quote:
    sku: str
    price: float


calls: list[str] = []


@rn.activity
async def wf_price(ctx: rn.ActivityContext, item: Item) -> Quote:
    calls.append(f"price:{item.sku}")
    return Quote(item.sku, 2.5 * item.qty)


@rn.activity
def wf_sync_thread(ctx: rn.ActivityContext) -> str:
    return threading.current_thread().name


@rn.activity
def wf_frame(ctx: rn.ActivityContext, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "i": list(range(n)),
            "f": [0.5 * i for i in range(n)],
            "s": [f"r{i}" for i in range(n)],
            "t": pd.date_range("2026-01-01", periods=n, freq="h", tz="UTC"),
            "c": pd.Categorical(["a", "b"] * (n // 2)),
            "n": pd.array([1, None] * (n // 2), dtype="Int64"),
        }
    )


@rn.workflow
async def wf_quote(ctx: rn.WorkflowContext, item: Item) -> Quote:
    quote = await wf_price(ctx, item)
    assert isinstance(quote, Quote)
    return quote


@rn.workflow
async def wf_threads(ctx: rn.WorkflowContext) -> str:
    return await wf_sync_thread(ctx)


@rn.workflow
async def wf_frames(ctx: rn.WorkflowContext, n: int) -> int:
    frame = await wf_frame(ctx, n)
    assert isinstance(frame, pd.DataFrame)
    return len(frame)


async def test_start_and_result_with_typed_values(app: rn.App) -> None:
    iid = await app.start(wf_quote, Item(sku="A", qty=4))
    result = await app.result(iid)
    assert result == Quote("A", 10.0)
    info = app.get_instance(iid)
    assert info.status == "completed"
    assert info.input == {"item": {"sku": "A", "qty": 4}}
    assert info.output == {"sku": "A", "price": 10.0}


async def test_dict_input_is_coerced_to_the_annotated_model(app: rn.App) -> None:
    iid = await app.start(wf_quote, {"sku": "B", "qty": 1})
    assert await app.result(iid) == Quote("B", 2.5)


async def test_custom_instance_id_and_idempotent_start(app: rn.App) -> None:
    calls.clear()
    first = await app.start(wf_quote, Item(sku="C", qty=1), instance_id="order-42")
    second = await app.start(wf_quote, Item(sku="C", qty=1), instance_id="order-42")
    assert first == second == "order-42"
    await app.result("order-42")
    assert calls == ["price:C"]
    assert len(app.list_instances()) == 1


async def test_start_by_name(app: rn.App) -> None:
    iid = await app.start("wf_quote", {"sku": "D", "qty": 2})
    assert (await app.result(iid)).price == 5.0


async def test_sync_activities_run_off_the_event_loop(app: rn.App) -> None:
    name = await app.result(await app.start(wf_threads))
    assert name != threading.current_thread().name
    assert name.startswith("romancy")


async def test_dataframe_result_round_trips_with_dtypes(app: rn.App) -> None:
    iid = await app.start(wf_frames, 6)
    assert await app.result(iid) == 6
    stored = app.get_history(iid)[0]
    assert stored.output["__romancy_type__"] == "pandas.DataFrame"
    # Replaying returns an equal frame, every dtype kept.
    from romancy_nb.engine.codec import decode

    original = wf_frame.fn(None, 6)
    replayed = decode(app.store.load_history(iid)[0].output, pd.DataFrame)
    pd.testing.assert_frame_equal(replayed, original)


async def test_many_concurrent_instances(app: rn.App) -> None:
    ids = await asyncio.gather(*(app.start(wf_quote, Item(sku=f"s{i}", qty=i)) for i in range(50)))
    results = await asyncio.gather(*(app.result(i) for i in ids))
    assert [r.price for r in results] == [2.5 * i for i in range(50)]


def test_app_run_in_a_script(store_url: str) -> None:
    app = rn.App(store_url)
    assert app.run(wf_quote, Item(sku="E", qty=2)) == Quote("E", 5.0)
    # The app can run again after it closed.
    assert app.run(wf_quote, Item(sku="F", qty=1)) == Quote("F", 2.5)


async def test_app_run_refuses_a_running_loop(store_url: str) -> None:
    app = rn.App(store_url)
    try:
        with pytest.raises(RuntimeError, match="await app.start"):
            app.run(wf_quote, Item(sku="G", qty=1))
    finally:
        await app.close()  # never opened: closes its store (a PostgreSQL pool's threads)


def test_calling_an_activity_without_a_workflow_context_explains() -> None:
    with pytest.raises(TypeError, match="workflow's context"):
        wf_price(object(), Item(sku="x", qty=1))


def test_calling_a_workflow_directly_explains() -> None:
    with pytest.raises(TypeError, match="app.start"):
        wf_quote(Item(sku="x", qty=1))


def test_workflow_must_be_async() -> None:
    with pytest.raises(TypeError, match="async def"):

        @rn.workflow
        def wf_not_async(ctx: rn.WorkflowContext) -> None: ...


@pytest.mark.sqlite_only  # ":memory:" is a SQLite database
def test_memory_store() -> None:
    app = rn.App(":memory:")
    assert app.run(wf_quote, Item(sku="M", qty=2)).price == 5.0


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
async def test_group_commit_under_concurrency(store_url: str, synchronous: str) -> None:
    async with rn.App(store_url, synchronous=synchronous, group_commit=True) as app:
        assert app.group_commit
        ids = await asyncio.gather(
            *(app.start(wf_quote, Item(sku=f"g{i}", qty=i)) for i in range(40))
        )
        results = await asyncio.gather(*(app.result(i) for i in ids))
        assert [r.price for r in results] == [2.5 * i for i in range(40)]
        assert all(len(app.get_history(i)) == 1 for i in ids)
