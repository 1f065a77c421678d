"""``app.find_instances`` edges: any key text matches, a non-text key or an unmatchable
value is a clear error, and integers beyond SQLite's 64 bits match exactly."""

from __future__ import annotations

from typing import Any

import pytest

import romancy_nb as rn


@rn.workflow
async def find_flow(ctx: rn.WorkflowContext, data: dict[str, Any]) -> None:
    return None


async def _start(app: rn.App, iid: str, data: dict[str, Any]) -> str:
    await app.start(find_flow, data, instance_id=iid)
    await app.result(iid)
    return iid


def _ids(found: list[rn.InstanceInfo]) -> list[str]:
    return sorted(info.instance_id for info in found)


async def test_keys_with_quotes_and_backslashes_match(store_url: str) -> None:
    async with rn.App(store_url) as app:
        quoted = await _start(app, "quoted", {'say "hi"': 1, "back\\slash": "v", "a[0]": True})
        await _start(app, "other", {"say hi": 1, "backslash": "v"})
        assert _ids(app.find_instances({'data.say "hi"': 1})) == [quoted]
        assert _ids(app.find_instances({"data.back\\slash": "v"})) == [quoted]
        assert _ids(app.find_instances({"data.a[0]": True})) == [quoted]
        assert _ids(app.find_instances({'data.say "hi"': 2})) == []


async def test_integers_beyond_64_bits_match_exactly(store_url: str) -> None:
    async with rn.App(store_url) as app:
        big = await _start(app, "big", {"n": 10**30})
        await _start(app, "bigger", {"n": 10**30 + 1})
        await _start(app, "small", {"n": 1})
        negative = await _start(app, "negative", {"n": -(10**30)})
        assert _ids(app.find_instances({"data.n": 10**30})) == [big]
        assert _ids(app.find_instances({"data.n": -(10**30)})) == [negative]
        assert _ids(app.find_instances({"data.n": 10**40})) == []
        assert _ids(app.find_instances({"data.n": 1})) == ["small"]


async def test_keys_that_are_not_text_are_a_clear_error(store_url: str) -> None:
    async with rn.App(store_url) as app:
        with pytest.raises(TypeError, match=r"dot paths \(str\).*1 \(int\)"):
            app.find_instances({1: 2})  # type: ignore[dict-item]
        with pytest.raises(TypeError, match="not list"):
            app.find_instances({"data.n": [1]})
        with pytest.raises(ValueError, match="dot-separated"):
            app.find_instances({"data..n": 1})
