"""Groups: join, leave, list members; membership ends with the instance."""

from __future__ import annotations

import pytest

import romancy_nb as rn
from romancy_nb.testing import eventually


@rn.workflow
async def gr_member(ctx: rn.WorkflowContext, groups: list[str], leave: str | None) -> str:
    for group in groups:
        await ctx.join_group(group)
    await ctx.join_group(groups[0])  # joining twice is harmless
    if leave:
        await ctx.leave_group(leave)
    await ctx.wait_event("gr.done")
    return "done"


@rn.workflow
async def gr_failing(ctx: rn.WorkflowContext) -> str:
    await ctx.join_group("gr.doomed")
    await ctx.sleep(0.05)
    raise rn.TerminalError("gone")


async def test_members_join_leave_and_end_with_the_instance(app: rn.App) -> None:
    async def joined(*args: object, instance_id: str) -> str:
        # one after the other: members are listed oldest first, and runs on a store that
        # is not inline (PostgreSQL) would otherwise reach their joins in any order
        iid = await app.start(gr_member, *args, instance_id=instance_id)
        await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
        return iid

    a = await joined(["gr.red", "gr.blue"], None, instance_id="gr-a")
    b = await joined(["gr.red"], "gr.red", instance_id="gr-b")
    c = await joined(["gr.blue", "gr.red"], None, instance_id="gr-c")
    assert app.get_group_members("gr.red") == [a, c]
    assert app.get_group_members("gr.blue") == [a, c]
    assert app.get_group_members("gr.none") == []
    await app.send_event("gr.done", None)
    for iid in (a, b, c):
        assert await app.result(iid, timeout=10) == "done"
    assert app.get_group_members("gr.red") == []  # completed instances leave
    assert [s.step_id for s in app.get_history(b)][:3] == [
        "join_group:1",
        "join_group:2",
        "leave_group:1",
    ]


async def test_a_failed_instance_leaves_its_groups(app: rn.App) -> None:
    iid = await app.start(gr_failing)
    await eventually(lambda: app.get_group_members("gr.doomed") == [iid])
    with pytest.raises(rn.TerminalError):
        await app.result(iid, timeout=10)
    assert app.get_instance(iid).status == "failed"
    assert app.get_group_members("gr.doomed") == []
