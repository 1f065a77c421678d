"""Event-handler workflows: an event of the type a workflow opted in for starts it."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

import romancy_nb as rn
from romancy_nb.engine.handlers import instance_id_for
from romancy_nb.testing import eventually
from tests.conftest import count_rows


class Signup(BaseModel):
    email: str
    plan: str = "free"


@rn.workflow(name="eh.signup", event_handler=True)
async def eh_signup(ctx: rn.WorkflowContext, user: Signup) -> str:
    assert isinstance(user, Signup)
    return f"welcome {user.email} ({user.plan})"


@rn.workflow(name="eh.order", event_handler=True)
async def eh_order(ctx: rn.WorkflowContext, item: str, qty: int = 1) -> str:
    return f"{qty} x {item}"


@rn.workflow(name="eh.tick", event_handler=True)
async def eh_tick(ctx: rn.WorkflowContext) -> str:
    return "ticked"


@rn.workflow(name="eh.private")
async def eh_private(ctx: rn.WorkflowContext, item: str) -> str:
    return item


@rn.workflow
async def eh_listener(ctx: rn.WorkflowContext) -> str:
    event = await ctx.wait_event("eh.order")
    return f"heard {event.data['item']}"


async def test_a_single_parameter_gets_the_data_as_its_value(app: rn.App) -> None:
    event_id = await app.send_event("eh.signup", {"email": "a@x.org"}, id="e1")
    assert event_id == "e1"
    iid = instance_id_for("eh.signup", "e1")
    assert iid == "eh.signup:e1"
    assert await app.result(iid) == "welcome a@x.org (free)"
    assert app.get_instance(iid).workflow_name == "eh.signup"


async def test_an_object_of_parameter_names_binds_them(app: rn.App) -> None:
    await app.send_event("eh.order", {"item": "tea", "qty": 3}, id="o1")
    assert await app.result("eh.order:o1") == "3 x tea"
    await app.send_event("eh.order", {"item": "jam"}, id="o2")  # the default fills qty
    assert await app.result("eh.order:o2") == "1 x jam"


async def test_no_data_starts_a_workflow_without_required_parameters(app: rn.App) -> None:
    await app.send_event("eh.tick", id="t1")
    assert await app.result("eh.tick:t1") == "ticked"


async def test_a_repeated_event_starts_nothing_new(app: rn.App) -> None:
    prepared = app.prepare_event("eh.order", {"item": "tea"}, id="dup")
    first = await app.deliver_event(prepared)
    again = await app.deliver_event(app.prepare_event("eh.order", {"item": "tea"}, id="dup"))
    assert (first.instance_id, first.duplicate) == ("eh.order:dup", False)
    assert (again.instance_id, again.duplicate) == ("eh.order:dup", True)
    await app.result("eh.order:dup")
    assert len(app.list_instances(workflow="eh.order").instances) == 1
    assert count_rows(app.store, "channel_messages", channel="eh.order") == 1


async def test_an_event_without_an_id_starts_one_instance_each(app: rn.App) -> None:
    a = await app.deliver_event(app.prepare_event("eh.order", {"item": "a"}))
    b = await app.deliver_event(app.prepare_event("eh.order", {"item": "b"}))
    assert a.instance_id != b.instance_id
    assert [await app.result(r.instance_id or "") for r in (a, b)] == ["1 x a", "1 x b"]


@pytest.mark.parametrize(
    ("event_type", "data", "says"),
    [
        ("eh.order", {"item": "tea", "colour": "red"}, "parameters of workflow 'eh.order'"),
        ("eh.order", {"qty": 2}, "required: item"),
        ("eh.order", {"item": "tea", "qty": "many"}, "qty"),
        ("eh.order", None, "not None"),
        ("eh.signup", {"plan": "pro"}, "email"),
        ("eh.signup", 42, "Signup"),
        ("eh.tick", {"x": 1}, "none"),
    ],
)
async def test_data_that_does_not_fit_is_refused_and_nothing_is_stored(
    app: rn.App, event_type: str, data: object, says: str
) -> None:
    with pytest.raises(rn.RomancyError, match=says) as raised:
        await app.send_event(event_type, data, id="bad")
    assert "eh." in str(raised.value)
    assert app.list_instances().instances == []
    assert count_rows(app.store, "channel_messages") == 0


async def test_a_workflow_without_the_opt_in_is_never_started(app: rn.App) -> None:
    receipt = await app.deliver_event(app.prepare_event("eh.private", {"item": "x"}, id="p"))
    assert receipt.instance_id is None
    assert app.list_instances().instances == []
    assert count_rows(app.store, "channel_messages", channel="eh.private") == 1  # still an event


async def test_the_event_also_reaches_instances_waiting_for_its_type(app: rn.App) -> None:
    listener = await app.start(eh_listener)
    await eventually(
        lambda: (
            app.get_instance(listener).status == "waiting_for_event"
            and listener not in app.running()
        )
    )
    await app.send_event("eh.order", {"item": "tea"}, id="both")
    assert await app.result(listener) == "heard tea"
    assert await app.result("eh.order:both") == "1 x tea"


async def test_a_client_app_stores_the_start_for_the_workers(store_url: str) -> None:
    async with rn.App(store_url, max_concurrent=0) as client:
        await client.send_event("eh.order", {"item": "tea"}, id="c1")
        assert client.get_instance("eh.order:c1").status == "running"
        assert client.running() == []
    async with rn.App(store_url) as worker:
        assert await worker.result("eh.order:c1", timeout=60) == "1 x tea"


async def test_an_instance_id_taken_by_another_workflow_is_refused(app: rn.App) -> None:
    await app.start(eh_private, "x", instance_id="eh.order:taken")
    with pytest.raises(rn.InvalidWorkflowState, match="already belongs to workflow"):
        await app.send_event("eh.order", {"item": "tea"}, id="taken")
    assert count_rows(app.store, "channel_messages") == 0  # the event was not stored either
