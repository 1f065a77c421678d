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
    from romancy_nb.engine.waiting import WaitingRun


def join_group(run: WaitingRun, group: str) -> Coroutine[Any, Any, Any]:
    channels.check_name("the group", group)
    return _membership(run, run._wait_id("join_group", None), "join_group", group)


def leave_group(run: WaitingRun, group: str) -> Coroutine[Any, Any, Any]:
    channels.check_name("the group", group)
    return _membership(run, run._wait_id("leave_group", None), "leave_group", group)


async def _membership(run: WaitingRun, step_id: str, kind: str, group: str) -> None:
    input_json = channels.step_input(group=group)
    if run._recorded(step_id, kind, kind, input_json) is not None:
        return
    step = run._step_record(step_id, kind, "completed", input_json, None)
    store = run.app.store
    method = store.join_group if kind == "join_group" else store.leave_group
    run._store(method, run.instance_id, run.owner, group, step)


__all__ = ["join_group", "leave_group"]
