"""Views as typed DataFrames, and ``%%sql`` over the store and the namespace."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pandas as pd
import pytest

import romancy_nb as rn
from romancy_nb.notebook import views
from tests.notebook.conftest import Shell


@rn.activity(retry=rn.RetryPolicy.fixed(3, 0.001))
def flaky_square(ctx: rn.ActivityContext, x: int) -> dict[str, int]:
    if ctx.attempt < 2:
        raise RuntimeError("first attempt fails")
    return {"square": x * x}


@rn.workflow
async def views_flow(ctx: rn.WorkflowContext, x: int, label: str = "a") -> int:
    result = await flaky_square(ctx, x)
    return result["square"]


@rn.activity(retry=rn.RetryPolicy.none())
def always_fails(ctx: rn.ActivityContext) -> None:
    raise rn.TerminalError("no")


@rn.workflow
async def views_failing(ctx: rn.WorkflowContext) -> None:
    await always_fails(ctx)


async def test_instances_and_history_are_typed(store_url: str) -> None:
    async with rn.App(store_url) as app:
        ok = await app.start(views_flow, 3, label="b", instance_id="v-ok")
        bad = await app.start(views_failing, instance_id="v-bad")
        assert await app.result(ok) == 9
        with pytest.raises(rn.TerminalError):
            await app.result(bad)
        frame = rn.instances(app=app)
        assert list(frame.columns) == views.INSTANCE_COLUMNS
        assert set(frame["instance_id"]) == {"v-ok", "v-bad"}
        assert str(frame["created_at"].dtype) == "datetime64[ns, UTC]"
        row = frame.set_index("instance_id").loc["v-ok"]
        assert row["input"] == {"x": 3, "label": "b"}
        assert row["output"] == 9
        assert (
            frame.set_index("instance_id").loc["v-bad", "error"]["type"].endswith("TerminalError")
        )
        assert list(rn.instances(status="failed", app=app)["instance_id"]) == ["v-bad"]
        assert list(rn.instances(workflow="views_flow", app=app)["instance_id"]) == ["v-ok"]

        steps = rn.history("v-ok", app=app)
        assert list(steps.columns) == views.HISTORY_COLUMNS
        assert list(steps["step_id"]) == ["flaky_square:1"]
        assert steps["output"][0] == {"square": 9}
        assert steps["input"][0] == [3]
        assert steps["attempts"][0] == 2
        assert str(steps["seq"].dtype) == "int64"
        assert str(steps["started_at"].dtype) == "datetime64[ns, UTC]"
        assert steps["duration"][0] >= pd.Timedelta(0)
        everything = rn.history(app=app)
        assert set(everything["instance_id"]) == {"v-ok", "v-bad"}
        assert everything.set_index("instance_id").loc["v-bad", "status"] == "failed"


async def test_waiting_views_have_their_columns(store_url: str) -> None:
    async with rn.App(store_url) as app:
        for view, columns in (
            (rn.timers, views.TIMER_COLUMNS),
            (rn.messages, views.MESSAGE_COLUMNS),
            (rn.events, views.EVENT_COLUMNS),
        ):
            frame = view(app=app)
            assert list(frame.columns) == columns
            assert frame.empty


def test_views_on_a_database_without_tables(tmp_path: Path) -> None:
    app = rn.App(tmp_path / "empty.db")
    try:
        assert rn.instances(app=app).empty
        assert list(rn.history(app=app).columns) == views.HISTORY_COLUMNS
    finally:
        app.store.close()


def test_sql_over_tables_and_dataframes(ip: Shell) -> None:
    ip.run("%%activity\ndef inc(ctx, x: int) -> int:\n    return x + 1")
    ip.run(
        "%%workflow\nasync def incs(ctx, n: int) -> int:\n"
        "    for i in range(n):\n        await inc(ctx, i)\n    return n"
    )
    ip.run(
        "for i, n in enumerate([2, 3]):\n"
        "    await rn.current_app().result(await rn.current_app().start("
        "incs, n, instance_id=f's-{i}'))"
    )
    ip.run(
        "import pandas as pd\nowners = pd.DataFrame({'iid': ['s-0', 's-1'], "
        "'owner': ['ann', 'bob']})"
    )
    frame = ip.run(
        "%%sql -o counts\n"
        "SELECT o.owner, count(*) AS steps, max(h.finished_at) AS last\n"
        "FROM history h JOIN owners o ON o.iid = h.instance_id\n"
        "GROUP BY o.owner ORDER BY o.owner"
    )
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["owner"]) == ["ann", "bob"]
    assert list(frame["steps"]) == [2, 3]
    assert ip.ns["counts"] is frame
    by_input = ip.run(
        "%%sql\nSELECT instance_id, CAST(json_extract(input, '$.n') AS INTEGER) AS n "
        "FROM workflow_instances ORDER BY instance_id"
    )
    assert list(by_input["n"]) == [2, 3]


@rn.workflow
async def views_sleeper(ctx: rn.WorkflowContext) -> None:
    await ctx.sleep(3600)


async def test_timers_messages_and_events_views(store_url: str) -> None:
    async with rn.App(store_url) as app:
        await app.start(views_sleeper, instance_id="sleepy")
        async with asyncio.timeout(10):
            while app.get_instance("sleepy").status != "waiting_for_timer":
                await asyncio.sleep(0.01)
        timers = rn.timers(app=app)
        assert list(timers["instance_id"]) == ["sleepy"]
        assert list(timers["step_id"]) == ["sleep:1"]
        assert str(timers["fire_at"].dtype) == "datetime64[ns, UTC]"
        assert timers["fire_at"][0] > pd.Timestamp.now(tz="UTC") + pd.Timedelta(minutes=59)
        await app.publish("jobs", {"n": 1}, metadata={"by": "test"})
        await app.send_event("order.paid", {"order": 7}, source="shop")
        messages = rn.messages(app=app)
        assert list(messages["channel"]) == ["jobs", "order.paid"]
        assert messages["data"][0] == {"n": 1}
        assert messages["metadata"][0] == {"by": "test"}
        assert list(rn.messages("jobs", app=app)["channel"]) == ["jobs"]
        events = rn.events(app=app)
        assert list(events["type"]) == ["order.paid"]
        assert events["source"][0] == "shop"
        assert events["data"][0] == {"order": 7}


async def test_a_fork_shows_its_lineage(store_url: str) -> None:
    async with rn.App(store_url) as app:
        await app.result(await app.start(views_flow, 4, instance_id="v-orig"))
        fork = await app.fork("v-orig", at="flaky_square:1", instance_id="v-fork")
        await app.result(fork)
        frame = rn.instances(app=app).set_index("instance_id")
        assert frame.loc["v-fork", ["forked_from", "forked_at"]].tolist() == [
            "v-orig",
            "flaky_square:1",
        ]
        assert frame.loc["v-orig", ["forked_from", "forked_at"]].isna().all()


@rn.activity(transactional=False)
def views_announce(ctx: rn.ActivityContext, n: int) -> None:
    ctx.send_event("views.placed", {"n": n}, subject=f"order-{n}")


@rn.workflow
async def views_announcing(ctx: rn.WorkflowContext, n: int) -> None:
    await views_announce(ctx, n)


async def test_the_outbox_view_shows_each_event_and_its_delivery(store_url: str) -> None:
    async with rn.App(store_url) as app:  # no relayer: the events stay pending
        empty = rn.outbox(app=app)
        assert list(empty.columns) == views.OUTBOX_COLUMNS and empty.empty
        for n in (1, 2):
            await app.start(views_announcing, n, instance_id=f"o-{n}")
            await app.result(f"o-{n}")
        frame = rn.outbox(app=app)
        assert list(frame.columns) == views.OUTBOX_COLUMNS
        assert list(frame["instance_id"]) == ["o-1", "o-2"]  # oldest first
        first = frame.iloc[0]
        assert (first["type"], first["source"], first["subject"]) == (
            "views.placed",
            "romancy_nb/views_announcing",
            "order-1",
        )
        assert first["data"] == {"n": 1}
        assert (first["status"], first["attempts"]) == ("pending", 0)
        assert str(frame["created_at"].dtype) == "datetime64[ns, UTC]"
        assert pd.isna(first["delivered_at"])
        assert list(rn.outbox(instance_id="o-2", app=app)["instance_id"]) == ["o-2"]
        assert rn.outbox(status="delivered", app=app).empty
