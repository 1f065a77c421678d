"""get / list / find instances, pagination, and the public API surface."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

import romancy_nb as rn


class Customer(BaseModel):
    id: int
    name: str
    vip: bool
    note: str | None = None


@rn.workflow
async def mg_flow(ctx: rn.WorkflowContext, customer: Customer, region: str) -> str:
    return f"{customer.name}@{region}"


@rn.workflow
async def mg_other(ctx: rn.WorkflowContext) -> None:
    return None


async def _seed(app: rn.App) -> list[str]:
    ids = []
    for i in range(7):
        customer = Customer(id=i, name=f"c{i}", vip=i % 2 == 0, note=None if i < 5 else "x")
        ids.append(await app.start(mg_flow, customer, "eu" if i < 4 else "us"))
    ids.append(await app.start(mg_other))
    for iid in ids:
        await app.result(iid)
    return ids


async def test_get_instance_and_not_found(app: rn.App) -> None:
    ids = await _seed(app)
    info = app.get_instance(ids[0])
    assert info.workflow_name == "mg_flow"
    assert info.input == {
        "customer": {"id": 0, "name": "c0", "vip": True, "note": None},
        "region": "eu",
    }
    assert info.output == "c0@eu"
    assert info.created_at <= info.updated_at
    with pytest.raises(rn.WorkflowNotFound):
        app.get_instance("nope")
    with pytest.raises(rn.WorkflowNotFound):
        app.get_history("nope")


async def test_list_filters_and_pages(app: rn.App) -> None:
    ids = await _seed(app)
    assert {i.instance_id for i in app.list_instances(workflow="mg_other")} == {ids[-1]}
    assert len(app.list_instances(status="completed")) == 8
    assert len(app.list_instances(status="failed")) == 0
    assert [i.instance_id for i in app.list_instances(instance_id=ids[3])] == [ids[3]]

    seen: list[str] = []
    token = None
    while True:
        page = app.list_instances(limit=3, page_token=token)
        seen.extend(i.instance_id for i in page)
        token = page.next_page_token
        if token is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
    with pytest.raises(ValueError, match="page_token"):
        app.list_instances(page_token="garbage!")


async def test_find_by_dot_paths_into_the_input(app: rn.App) -> None:
    ids = await _seed(app)

    def found(filters: dict[str, object]) -> set[str]:
        return {i.instance_id for i in app.find_instances(filters)}

    assert found({"customer.id": 3}) == {ids[3]}
    assert found({"customer.name": "c5"}) == {ids[5]}
    assert found({"region": "us"}) == set(ids[4:7])
    assert found({"customer.vip": True, "region": "eu"}) == {ids[0], ids[2]}
    assert found({"customer.vip": False}) == {ids[1], ids[3], ids[5]}
    assert found({"customer.note": None}) == set(ids[:5])
    assert found({"customer.id": 1.0}) == {ids[1]}
    assert found({"customer.id": "1"}) == set()  # a string is not the number 1
    assert found({"customer.missing": None}) == set()
    with pytest.raises(TypeError):
        app.find_instances({"customer": {"id": 1}})
    with pytest.raises(ValueError):
        app.find_instances({"customer..id": 1})


def test_public_names_are_pinned() -> None:
    expected = {
        "Activity",
        "ActivityContext",
        "ActivityTimeoutError",
        "App",
        "AttemptError",
        "ChannelMessageTimeoutError",
        "ChannelModeConflictError",
        "DatabaseLockedError",
        "DeterminismViolation",
        "EventTimeoutError",
        "InstanceInfo",
        "InstancePage",
        "InvalidArgumentsError",
        "InvalidWorkflowState",
        "Registry",
        "RetryExhaustedError",
        "RetryPolicy",
        "RomancyError",
        "SerializationError",
        "StepInfo",
        "StoreError",
        "TerminalError",
        "Workflow",
        "WorkflowCancelled",
        "WorkflowContext",
        "WorkflowFailed",
        "WorkflowNotFound",
        "__version__",
        "activity",
        "workflow",
    }
    assert expected <= set(rn.__all__)
    for name in rn.__all__:
        assert hasattr(rn, name), name
    for name in rn.__all__:
        obj = getattr(rn, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and name != "AttemptError":
            assert issubclass(obj, rn.RomancyError), name
