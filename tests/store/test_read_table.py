"""``SqliteStore.read_table``: whole tables for the notebook views, filtered by equality."""

from __future__ import annotations

import pytest

import romancy_nb as rn


@rn.activity
def add_one(ctx: rn.ActivityContext, x: int) -> int:
    return x + 1


@rn.workflow
async def read_table_flow(ctx: rn.WorkflowContext, x: int) -> int:
    return await add_one(ctx, await add_one(ctx, x))


async def test_read_table_returns_columns_and_rows(store_url: str) -> None:
    async with rn.App(store_url) as app:
        first = await app.start(read_table_flow, 1)
        second = await app.start(read_table_flow, 5)
        assert await app.result(first) == 3
        assert await app.result(second) == 7
        columns, rows = app.store.read_table("workflow_history")
        assert {"instance_id", "step_id", "output", "started_at"} <= set(columns)
        assert len(rows) == 4
        columns, rows = app.store.read_table("workflow_history", {"instance_id": first})
        assert sorted(row[columns.index("output")] for row in rows) == ["2", "3"]
        assert app.store.read_table("no_such_table") is None
        with pytest.raises(ValueError, match="no column"):
            app.store.read_table("workflow_history", {"nope": 1})
