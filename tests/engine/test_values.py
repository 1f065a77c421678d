"""Values round-trip exactly (first run, replay, messages, results) or are refused at the call.

Each case runs through the real App: the first run, a resume after ``ctx.sleep`` (which
replays the recorded steps from the store), ``app.replay`` and a second App reading the
stored result must all see the same value of the same type — or the call that would store
it raises an error that names what and the type, and nothing is stored.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import romancy_nb as rn
from romancy_nb.engine import codec
from romancy_nb.engine.codec import Codec, UnresolvedAnnotationError
from romancy_nb.testing import eventually

SEEN: list[Any] = []
"""What the workflow bodies saw, in order: first run, then each resume."""


class Reading(BaseModel):
    sensor: str
    value: float


class _Point(BaseModel):
    x: int


@rn.activity
async def vl_echo(ctx: rn.ActivityContext, value):  # type: ignore[no-untyped-def]
    return value


@rn.workflow
async def vl_echo_wf(ctx: rn.WorkflowContext, value):  # type: ignore[no-untyped-def]
    """Unannotated end to end: input, activity argument, activity result, workflow result."""
    got = await vl_echo(ctx, value)
    SEEN.append(got)
    await ctx.sleep(0.01)  # suspends; the resume replays vl_echo from the store
    SEEN.append(got)
    return got


@rn.activity
async def vl_bytes(ctx: rn.ActivityContext, value: bytes) -> bytes:
    return value


@rn.workflow
async def vl_bytes_wf(ctx: rn.WorkflowContext, value: bytes) -> bytes:
    got = await vl_bytes(ctx, value)
    SEEN.append(got)
    await ctx.sleep(0.01)
    SEEN.append(got)
    return got


@rn.activity
async def vl_shapes(
    ctx: rn.ActivityContext, s: set[int], t: tuple[int, str]
) -> tuple[frozenset[int], tuple[int, str]]:
    return frozenset(s), t


@rn.workflow
async def vl_shapes_wf(
    ctx: rn.WorkflowContext, s: set[int], t: tuple[int, str]
) -> tuple[frozenset[int], tuple[int, str]]:
    got = await vl_shapes(ctx, s, t)
    SEEN.append(got)
    await ctx.sleep(0.01)
    SEEN.append(got)
    return got


@rn.workflow
async def vl_float_wf(ctx: rn.WorkflowContext, x: float) -> float:
    await ctx.sleep(0.01)
    return x


@rn.workflow
async def vl_reading_wf(ctx: rn.WorkflowContext, reading: Reading) -> float:
    await ctx.sleep(0.01)
    return reading.value


@rn.activity
async def vl_ratio(ctx: rn.ActivityContext, a: float, b: float) -> float:
    return a / b if b else math.inf


@rn.workflow
async def vl_ratio_wf(ctx: rn.WorkflowContext, a: float, b: float) -> float:
    return await vl_ratio(ctx, a, b)


@rn.workflow
async def vl_overflow_wf(ctx: rn.WorkflowContext, x: float) -> float:
    """A finite input that becomes an infinite activity argument."""
    return await vl_ratio(ctx, x * 1e308, 1.0)


@rn.workflow
async def vl_event_wf(ctx: rn.WorkflowContext) -> bytes:
    return (await ctx.wait_event("vl.blob")).data


@rn.activity
async def vl_make(ctx: rn.ActivityContext, kind: str):  # type: ignore[no-untyped-def]
    return {"set": {1, 2}, "tuple": (1, 2), "nan": [math.nan], "int keys": {1: 2}}[kind]


@rn.workflow
async def vl_make_wf(ctx: rn.WorkflowContext, kind: str):  # type: ignore[no-untyped-def]
    return await vl_make(ctx, kind)


@rn.workflow
async def vl_generator_wf(ctx: rn.WorkflowContext):  # type: ignore[no-untyped-def]
    return (i for i in range(3))


@rn.workflow
async def vl_iterator_wf(ctx: rn.WorkflowContext) -> Iterator[int]:
    return iter([0, 1, 2])


@rn.activity
async def vl_nest(ctx: rn.ActivityContext, depth: int):  # type: ignore[no-untyped-def]
    return _nested(depth)


@rn.workflow
async def vl_nest_wf(ctx: rn.WorkflowContext, depth: int) -> int:
    value = await vl_nest(ctx, depth)
    await ctx.sleep(0.01)
    return _depth(value)


@rn.activity
async def vl_point(ctx: rn.ActivityContext) -> VlPoint:  # type: ignore[name-defined]  # noqa: F821
    return _Point(x=1)


@rn.workflow
async def vl_point_wf(ctx: rn.WorkflowContext) -> str:
    point = await vl_point(ctx)
    SEEN.append(point)
    await ctx.sleep(0.01)
    SEEN.append(point)
    return type(point).__name__


@rn.workflow
async def vl_unresolved_input_wf(ctx: rn.WorkflowContext, x: VlMissing) -> None:  # type: ignore[name-defined]  # noqa: F821
    return None


@rn.workflow
async def vl_receive_wf(ctx: rn.WorkflowContext, channel: str, n: int, typed: bool):  # type: ignore[no-untyped-def]
    await ctx.subscribe(channel, mode="competing")
    got = []
    for _ in range(n):
        message = await ctx.receive(channel, model=bytes if typed else None)
        got.append(message.data)
    SEEN.append(got)
    return got


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def _depth(value: Any) -> int:
    depth = 0
    while isinstance(value, list):
        value, depth = value[0], depth + 1
    return depth


async def _everywhere(app: rn.App, store_url: str, workflow: Any, *args: Any) -> list[Any]:
    """What the workflow body saw (first run, resumes, app.replay) and its result as the
    first run, the replay and a second App on the database return it."""
    SEEN.clear()
    iid = await app.start(workflow, *args)
    first = await app.result(iid, timeout=30)
    replayed = await app.replay(iid)
    assert replayed.outcome == "completed", replayed.error
    async with rn.App(store_url) as other:
        stored = await other.result(iid, timeout=30)
    return [*SEEN, first, replayed.result, stored]


def _assert_exact(seen: list[Any], expected: Any) -> None:
    """Equal and of the same types all the way down (repr shows b'' vs '', set vs list)."""
    for value in seen:
        assert value == expected
        assert repr(value) == repr(expected)


# bytes


@pytest.mark.parametrize(
    "value", [b"abc", b"\xff\x00\x01", b"", {"blob": b"\x00\x01", "list": [b"x", "x"]}]
)
async def test_unannotated_bytes_round_trip_exactly(app: rn.App, store_url: str, value) -> None:  # type: ignore[no-untyped-def]
    _assert_exact(await _everywhere(app, store_url, vl_echo_wf, value), value)


async def test_annotated_bytes_round_trip_exactly_even_when_not_utf8(
    app: rn.App, store_url: str
) -> None:
    _assert_exact(await _everywhere(app, store_url, vl_bytes_wf, b"\xff\xfe"), b"\xff\xfe")
    _assert_exact(await _everywhere(app, store_url, vl_bytes_wf, b"abc"), b"abc")


@pytest.mark.parametrize("typed", [False, True])
async def test_bytes_published_arrive_as_bytes(app: rn.App, store_url: str, typed: bool) -> None:
    channel = f"vl.bytes.{typed}"
    await app.publish(channel, b"\x00\x01")
    await app.publish(channel, b"\xff")
    await app.publish(channel, b"text")
    expected = [b"\x00\x01", b"\xff", b"text"]
    _assert_exact(await _everywhere(app, store_url, vl_receive_wf, channel, 3, typed), expected)


async def test_event_data_bytes_arrive_as_bytes(app: rn.App) -> None:
    iid = await app.start(vl_event_wf)
    await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
    await app.send_event("vl.blob", b"\x80\x81")
    assert await app.result(iid, timeout=30) == b"\x80\x81"


# non-finite floats


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
async def test_a_non_finite_argument_is_refused_at_start(app: rn.App, value: float) -> None:
    with pytest.raises(rn.InvalidArgumentsError, match=r"vl_float_wf.*'x'.*(nan|inf)"):
        await app.start(vl_float_wf, value)
    with pytest.raises(rn.InvalidArgumentsError, match=r"vl_reading_wf.*'reading'.*(nan|inf)"):
        await app.start(vl_reading_wf, Reading(sensor="t1", value=value))
    assert len(app.list_instances()) == 0


async def test_a_finite_float_input_is_valid_json_the_store_can_query(app: rn.App) -> None:
    iid = await app.start(vl_float_wf, 2.5)
    assert await app.result(iid, timeout=30) == 2.5
    assert [i.instance_id for i in app.find_instances({"x": 2.5})] == [iid]


async def test_a_non_finite_activity_argument_is_refused_at_the_call(app: rn.App) -> None:
    assert await app.result(await app.start(vl_overflow_wf, 1.0), timeout=30) == 1e308
    iid = await app.start(vl_overflow_wf, 10.0)
    with pytest.raises(rn.InvalidArgumentsError, match=r"activity 'vl_ratio'.*'a'.*inf"):
        await app.result(iid, timeout=30)
    assert [s.step_id for s in app.get_history(iid)] == []  # the step was never recorded


async def test_a_non_finite_result_is_refused(app: rn.App) -> None:
    iid = await app.start(vl_ratio_wf, 1.0, 0.0)
    with pytest.raises(rn.RomancyError, match=r"result of activity 'vl_ratio'.*inf"):
        await app.result(iid, timeout=30)


async def test_non_finite_message_data_is_refused(app: rn.App) -> None:
    with pytest.raises(rn.SerializationError, match=r"channel 'vl.nan'.*nan"):
        await app.publish("vl.nan", {"reading": math.nan})


# sets, tuples and other values JSON would change


@pytest.mark.parametrize(
    ("value", "type_name"),
    [({1, 2}, "set"), ((1, 2), "tuple"), ({1: 2}, "int"), ([{"a": (1,)}], "tuple")],
)
async def test_an_unannotated_value_json_would_change_is_refused_at_start(
    app: rn.App, value: Any, type_name: str
) -> None:
    with pytest.raises(rn.InvalidArgumentsError, match=rf"vl_echo_wf.*'value'.*{type_name}"):
        await app.start(vl_echo_wf, value)
    assert len(app.list_instances()) == 0


@pytest.mark.parametrize("kind", ["set", "tuple", "nan", "int keys"])
async def test_an_unannotated_result_json_would_change_is_refused(app: rn.App, kind: str) -> None:
    iid = await app.start(vl_make_wf, kind)
    with pytest.raises(rn.RomancyError, match=r"result of activity 'vl_make'"):
        await app.result(iid, timeout=30)
    assert app.get_instance(iid).status == "failed"


async def test_annotated_sets_and_tuples_round_trip(app: rn.App, store_url: str) -> None:
    seen = await _everywhere(app, store_url, vl_shapes_wf, {3, 1}, (7, "seven"))
    _assert_exact(seen, (frozenset({1, 3}), (7, "seven")))


async def test_a_workflow_returning_a_generator_is_refused(app: rn.App) -> None:
    iid = await app.start(vl_generator_wf)
    with pytest.raises(rn.SerializationError, match=r"vl_generator_wf.*generator"):
        await app.result(iid, timeout=30)
    assert app.get_instance(iid).status == "failed"


async def test_an_iterator_annotation_is_refused_at_first_use(app: rn.App) -> None:
    with pytest.raises(TypeError, match=r"vl_iterator_wf.*Iterator.*list"):
        await app.start(vl_iterator_wf)


# nesting depth


async def test_nesting_the_reader_can_read_back_round_trips(app: rn.App) -> None:
    iid = await app.start(vl_nest_wf, codec.MAX_DEPTH)
    assert await app.result(iid, timeout=30) == codec.MAX_DEPTH


@pytest.mark.parametrize("depth", [201, 254, 300, 5000])
async def test_nesting_deeper_than_the_reader_reads_is_refused(app: rn.App, depth: int) -> None:
    iid = await app.start(vl_nest_wf, depth)
    with pytest.raises(rn.SerializationError, match=r"vl_nest.*deeper than 200"):
        await app.result(iid, timeout=30)
    with pytest.raises(rn.InvalidArgumentsError, match=r"'value'.*deeper than 200"):
        await app.start(vl_echo_wf, _nested(depth))


def test_max_depth_is_the_readers_real_limit() -> None:
    assert codec.decode(codec.encode(_nested(codec.MAX_DEPTH), Any, "v"), Any) == _nested(
        codec.MAX_DEPTH
    )
    text = "[" * (codec.MAX_DEPTH + 1) + "0" + "]" * (codec.MAX_DEPTH + 1)
    with pytest.raises(rn.SerializationError, match="deeper"):
        codec.decode(text, Any, "a value")


# annotations that do not resolve


async def test_an_unresolvable_annotation_is_an_error_not_a_silent_any(
    app: rn.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as first defined: a run on another backend may have resolved and cached it since
    monkeypatch.setattr(vl_point, "_shape", None)
    iid = await app.start(vl_point_wf)
    with pytest.raises(UnresolvedAnnotationError, match=r"activity 'vl_point'.*'VlPoint'"):
        await app.result(iid, timeout=30)
    # Not cached: once the name exists (a later notebook cell), the activity works, typed.
    monkeypatch.setitem(globals(), "VlPoint", _Point)
    SEEN.clear()
    iid = await app.start(vl_point_wf)
    assert await app.result(iid, timeout=30) == "_Point"
    assert SEEN and all(type(p) is _Point for p in SEEN)  # first run and after the resume


async def test_an_unresolvable_workflow_annotation_refuses_the_start(app: rn.App) -> None:
    with pytest.raises(UnresolvedAnnotationError, match=r"vl_unresolved_input_wf.*'VlMissing'"):
        await app.start(vl_unresolved_input_wf, 1)
    assert len(app.list_instances()) == 0


# stored values that no longer decode


async def test_a_stored_value_that_no_longer_validates_names_what(app: rn.App) -> None:
    iid = await app.start(vl_echo_wf, "not a number")
    await app.result(iid, timeout=30)
    text = app.store.load_history(iid)[0].output
    with pytest.raises(rn.SerializationError, match=r"stored result of activity 'x'.*int"):
        codec.decode(text, int, "the stored result of activity 'x'")


async def test_a_result_whose_annotation_changed_while_waiting_fails_naming_it(
    store_url: str,
) -> None:
    """The activity's result type changed while the instance waited: the resume fails with
    an error that says which stored value no longer reads as which type."""
    before, after = rn.Registry(), rn.Registry()

    def define(registry: rn.Registry, label: Any) -> None:
        activity = rn.activity(name="vl_label", registry=registry)(label)

        @rn.workflow(name="vl_label_wf", registry=registry)
        async def body(ctx: rn.WorkflowContext) -> None:
            await activity(ctx)
            await ctx.wait_event("vl.go")

    async def label_str(ctx: rn.ActivityContext) -> str:
        return "not a number"

    async def label_int(ctx: rn.ActivityContext) -> int:
        return 1

    define(before, label_str)
    define(after, label_int)
    async with rn.App(store_url, registry=before) as app:
        iid = await app.start("vl_label_wf")
        await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
    async with rn.App(store_url, registry=after) as app:
        await app.send_event("vl.go", None)
        with pytest.raises(
            rn.SerializationError, match=r"stored result of activity 'vl_label'.*as int"
        ):
            await app.result(iid, timeout=30)


# the codec registry


class Money:
    """A user class JSON cannot hold, stored through a registered codec."""

    def __init__(self, cents: int, currency: str) -> None:
        self.cents, self.currency = cents, currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (other.cents, other.currency) == (
            self.cents,
            self.currency,
        )

    def __hash__(self) -> int:
        return hash((self.cents, self.currency))

    def __repr__(self) -> str:
        return f"Money({self.cents}, {self.currency!r})"


@rn.activity
async def vl_price(ctx: rn.ActivityContext, amount: Money) -> Money:
    return Money(amount.cents * 2, amount.currency)


@rn.workflow
async def vl_money_wf(ctx: rn.WorkflowContext, amount: Money):  # type: ignore[no-untyped-def]
    got = await vl_price(ctx, amount)
    SEEN.append(got)
    await ctx.sleep(0.01)
    SEEN.append(got)
    return {"doubled": got}  # unannotated: the codec's tag keeps the type


@pytest.fixture
def money_codec() -> Iterator[None]:
    codec.register(
        Codec(
            tag="test.Money",
            handles=lambda cls: cls is Money,
            encode=lambda m: {"cents": m.cents, "currency": m.currency},
            decode=lambda fields: Money(fields["cents"], fields["currency"]),
        )
    )
    yield
    codec.unregister("test.Money")


@pytest.mark.usefixtures("money_codec")
async def test_a_registered_codec_round_trips_annotated_and_unannotated(
    app: rn.App, store_url: str
) -> None:
    seen = await _everywhere(app, store_url, vl_money_wf, Money(150, "EUR"))
    _assert_exact(seen[:-3], Money(300, "EUR"))  # in the body: first run, resume, replay
    _assert_exact(seen[-3:], {"doubled": Money(300, "EUR")})
    stored = app.get_history(app.list_instances().instances[0].instance_id)[0].output
    assert stored == {"__romancy_type__": "test.Money", "cents": 300, "currency": "EUR"}


async def test_a_dataframe_inside_an_unannotated_value_round_trips(
    app: rn.App, store_url: str
) -> None:
    import pandas as pd

    frame = pd.DataFrame({"a": [1, 2], "b": ["x", None], "c": pd.array([1, None], "Int64")})
    seen = await _everywhere(app, store_url, vl_echo_wf, {"frame": frame, "n": 1})
    for value in seen:
        assert value["n"] == 1
        pd.testing.assert_frame_equal(value["frame"], frame)


def test_a_codec_tag_is_registered_once() -> None:
    with pytest.raises(ValueError, match="pandas.DataFrame"):
        codec.register(Codec("pandas.DataFrame", lambda cls: False, lambda v: {}, lambda f: None))


def test_a_dict_holding_the_reserved_tag_key_is_refused() -> None:
    with pytest.raises(rn.SerializationError, match="__romancy_type__"):
        codec.encode({"__romancy_type__": "bytes", "base64": ""}, Any, "a value")


def test_an_unknown_stored_tag_names_it() -> None:
    with pytest.raises(rn.SerializationError, match="'nobody.Knows'"):
        codec.decode('{"__romancy_type__": "nobody.Knows"}', Any, "the result of activity 'x'")


def test_importing_romancy_nb_does_not_import_pandas() -> None:
    code = (
        "import sys\nfrom typing import Any\nimport romancy_nb as rn\n"
        "from romancy_nb.engine import codec\n"
        "codec.decode(codec.encode({'a': [1, b'x']}, Any, 'v'), Any)\n"
        "assert 'pandas' not in sys.modules, 'pandas imported'\n"
        "assert codec.for_tag('pandas.DataFrame') is not None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_engine_codec_knows_nothing_about_pandas() -> None:
    assert "pandas" not in Path(codec.__file__).read_text()
