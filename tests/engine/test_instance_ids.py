"""Instance ids the user passes: a clear error at the call, nothing stored."""

from __future__ import annotations

import pytest

import romancy_nb as rn
from romancy_nb.engine.ids import validate_instance_id


@rn.workflow
async def ids_echo(ctx: rn.WorkflowContext, n: int) -> int:
    return n


BAD_IDS = [
    pytest.param(123, "must be a str, not int", id="int"),
    pytest.param(b"abc", "must be a str, not bytes", id="bytes"),
    pytest.param("", "must not be empty", id="empty"),
    pytest.param("order-\udc80", "lone surrogate", id="lone-surrogate"),
    pytest.param("a\x00b", "NUL", id="nul"),
]


@pytest.mark.parametrize(("bad", "says"), BAD_IDS)
async def test_start_refuses_an_id_it_could_not_keep(app: rn.App, bad: object, says: str) -> None:
    with pytest.raises(rn.InvalidArgumentsError, match=says):
        await app.start(ids_echo, 1, instance_id=bad)  # type: ignore[arg-type]
    assert app.list_instances().instances == []


@pytest.mark.parametrize(("bad", "says"), BAD_IDS)
async def test_lookups_refuse_the_same_ids(app: rn.App, bad: object, says: str) -> None:
    for lookup in (app.get_instance, app.get_history):
        with pytest.raises(rn.InvalidArgumentsError, match=says):
            lookup(bad)  # type: ignore[arg-type]
    with pytest.raises(rn.InvalidArgumentsError, match=says):
        await app.cancel(bad)  # type: ignore[arg-type]


async def test_none_still_means_a_generated_uuid_and_any_text_is_kept(app: rn.App) -> None:
    generated = await app.start(ids_echo, 1)
    assert len(generated) == 36 and generated.count("-") == 4
    for iid in ("order 42", "ünïcode-✓", " spaced "):
        assert await app.start(ids_echo, 2, instance_id=iid) == iid
        assert app.get_instance(iid).instance_id == iid


def test_the_error_is_a_romancy_error_naming_the_problem() -> None:
    with pytest.raises(rn.RomancyError) as caught:
        validate_instance_id("")
    assert "pass None to get a generated UUID" in str(caught.value)
    assert caught.value.problem == "must not be empty"  # for callers that phrase their own
    assert validate_instance_id("x") == "x"
