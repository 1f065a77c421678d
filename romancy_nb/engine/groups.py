"""Groups: named sets of instances (Erlang's ``pg``), e.g. to find whom to ``send_to``.

``ctx.join_group`` / ``ctx.leave_group`` are recorded steps (a replay joins nothing twice);
``app.get_group_members`` lists the members. Membership ends when the instance ends
(completed, failed, cancelled) or recurs — the store drops it in the same transaction.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from romancy_nb.engine import channels

if TYPE_CHECKING:
    from romancy_nb.engine.runtime import StepHost


def join_group(run: StepHost, group: str) -> Coroutine[Any, Any, Any]:
    channels.check_name("the group", group)
    return _membership(run, run.take_step_id("join_group", None), "join_group", group)


def leave_group(run: StepHost, group: str) -> Coroutine[Any, Any, Any]:
    channels.check_name("the group", group)
    return _membership(run, run.take_step_id("leave_group", None), "leave_group", group)


async def _membership(run: StepHost, step_id: str, kind: str, group: str) -> None:
    input_json = channels.step_input(group=group)
    if run.recorded(step_id, kind, kind, input_json) is not None:
        return
    step = run.new_step(step_id, kind, "completed", input_json, None)
    store = run.store
    method = store.join_group if kind == "join_group" else store.leave_group
    await run.write(method, run.instance_id, run.owner, group, step)


__all__ = ["join_group", "leave_group"]
