"""``rn.ai.chat``: a model call as a recorded step, against the stand-in server with the
real ``openai`` client, on every backend."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from pydantic import BaseModel

import romancy_nb as rn
from romancy_nb.testing import eventually
from tests.ai.openai_server import OpenAIServer, ToolCall
from tests.conftest import FAST_RETRY

ASK = [{"role": "user", "content": "name a city"}]


class City(BaseModel):
    name: str
    population: int


def _client(base_url: str) -> openai.AsyncOpenAI:
    # The client's own retries are off: the step's retry policy is what is tested.
    return openai.AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0)


@rn.workflow
async def ai_ask(ctx: rn.WorkflowContext, base_url: str, stream: bool = False) -> str:
    answer = await rn.ai.chat(
        ctx, _client(base_url), model="m-1", messages=ASK, stream=stream, temperature=0
    )
    return str(answer.content)


@rn.workflow
async def ai_ask_then_wait(ctx: rn.WorkflowContext, base_url: str) -> str:
    answer = await rn.ai.chat(ctx, _client(base_url), model="m-1", messages=ASK)
    await ctx.wait_event("ai.go")
    return str(answer.content)


@rn.workflow
async def ai_city(ctx: rn.WorkflowContext, base_url: str, on_invalid: str) -> dict[str, Any]:
    city = await rn.ai.chat(
        ctx,
        _client(base_url),
        model="m-1",
        messages=ASK,
        response_format=City,
        on_invalid=on_invalid,  # type: ignore[arg-type]
        retry=FAST_RETRY,
    )
    assert isinstance(city, City)
    return city.model_dump()


@rn.workflow
async def ai_tools(ctx: rn.WorkflowContext, base_url: str, stream: bool) -> list[dict[str, Any]]:
    answer = await rn.ai.chat(ctx, _client(base_url), model="m-1", messages=ASK, stream=stream)
    return answer.tool_calls


async def test_a_call_is_a_recorded_step(app: rn.App, openai_server: OpenAIServer) -> None:
    openai_server.reply_text("Lyon", prompt_tokens=11, completion_tokens=1)
    iid = await app.start(ai_ask, openai_server.base_url)
    assert await app.result(iid, timeout=20) == "Lyon"
    (step,) = app.get_history(iid)
    assert (step.step_id, step.kind, step.status) == ("rn.ai.chat:1", "activity", "completed")
    assert openai_server.requests == [{"model": "m-1", "messages": ASK, "temperature": 0}]
    calls = rn.llm_calls(app, prices={"m-1": (1.0, 2.0)})
    assert calls[
        ["instance_id", "step_id", "model", "tokens_in", "tokens_out"]
    ].values.tolist() == [[iid, "rn.ai.chat:1", "m-1", 11, 1]]
    assert calls["cost"].tolist() == [pytest.approx((11 * 1.0 + 1 * 2.0) / 1000)]
    assert calls["latency"].iloc[0] > 0
    assert (calls["prompt"].iloc[0], calls["answer"].iloc[0]) == ("name a city", "Lyon")


async def test_cost_is_missing_for_an_unpriced_model(
    app: rn.App, openai_server: OpenAIServer
) -> None:
    iid = await app.start(ai_ask, openai_server.base_url)
    await app.result(iid, timeout=20)
    assert rn.llm_calls(app)["cost"].isna().all()
    assert rn.llm_calls(app, prices={"other": (1.0, 1.0)})["cost"].isna().all()


@pytest.mark.parametrize("status", [500, 429])
async def test_transient_errors_are_retried(
    app: rn.App, openai_server: OpenAIServer, status: int
) -> None:
    openai_server.reply_error(status)
    openai_server.reply_text("Lyon")
    iid = await app.start(ai_ask, openai_server.base_url)
    assert await app.result(iid, timeout=20) == "Lyon"
    assert len(openai_server.requests) == 2
    assert app.get_history(iid)[0].attempts == 2


async def test_a_bad_request_is_not_retried(app: rn.App, openai_server: OpenAIServer) -> None:
    openai_server.reply_error(400, "unknown parameter")
    iid = await app.start(ai_ask, openai_server.base_url)
    with pytest.raises(rn.TerminalError, match="unknown parameter"):
        await app.result(iid, timeout=20)
    assert len(openai_server.requests) == 1


async def test_structured_output_is_validated(app: rn.App, openai_server: OpenAIServer) -> None:
    openai_server.reply_json({"name": "Lyon", "population": 520000})
    iid = await app.start(ai_city, openai_server.base_url, "raise")
    assert await app.result(iid, timeout=20) == {"name": "Lyon", "population": 520000}
    schema = openai_server.requests[0]["response_format"]
    assert schema["type"] == "json_schema"
    assert schema["json_schema"]["name"] == "City"


async def test_an_invalid_answer_is_asked_again(app: rn.App, openai_server: OpenAIServer) -> None:
    openai_server.reply_json({"name": "Lyon"})
    openai_server.reply_json({"name": "Lyon", "population": 520000})
    iid = await app.start(ai_city, openai_server.base_url, "retry")
    assert await app.result(iid, timeout=20) == {"name": "Lyon", "population": 520000}
    assert len(openai_server.requests) == 2


async def test_an_invalid_answer_can_fail_the_step(
    app: rn.App, openai_server: OpenAIServer
) -> None:
    openai_server.reply_text("not json at all")
    iid = await app.start(ai_city, openai_server.base_url, "raise")
    with pytest.raises(rn.TerminalError, match="not a valid City"):
        await app.result(iid, timeout=20)
    assert len(openai_server.requests) == 1


async def test_a_stream_is_assembled_and_recorded(app: rn.App, openai_server: OpenAIServer) -> None:
    openai_server.reply_text("Lyon is a city", prompt_tokens=3, completion_tokens=4)
    iid = await app.start(ai_ask, openai_server.base_url, True)
    assert await app.result(iid, timeout=20) == "Lyon is a city"
    request = openai_server.requests[0]
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}
    row = rn.llm_calls(app).iloc[0]
    assert (row["answer"], row["tokens_in"], row["tokens_out"]) == ("Lyon is a city", 3, 4)


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_calls_are_recorded(
    app: rn.App, openai_server: OpenAIServer, stream: bool
) -> None:
    openai_server.reply_tool_calls(ToolCall("weather", {"city": "Lyon"}, id="call_1"))
    iid = await app.start(ai_tools, openai_server.base_url, stream)
    assert await app.result(iid, timeout=20) == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Lyon"}'},
        }
    ]


async def test_replay_needs_no_server(store_url: str, openai_server: OpenAIServer) -> None:
    openai_server.reply_text("Lyon")
    async with rn.App(store_url) as first:
        iid = await first.start(ai_ask_then_wait, openai_server.base_url)
        await eventually(lambda: first.get_instance(iid).status == "waiting_for_event")
    openai_server.stop()
    async with rn.App(store_url) as second:
        await second.send_event("ai.go", None)
        assert await second.result(iid, timeout=20) == "Lyon"
        report = await second.replay(iid)
    assert (report.outcome, report.result) == ("completed", "Lyon")
    assert len(openai_server.requests) == 1


async def test_bad_arguments_fail_at_the_call(app: rn.App) -> None:
    with pytest.raises(ValueError, match="on_invalid"):
        await rn.ai.chat(None, None, model="m", messages=[], on_invalid="ignore")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pydantic model"):
        await rn.ai.chat(None, None, model="m", messages=[], response_format=dict)  # type: ignore[arg-type]


async def test_the_panel_shows_prompt_and_answer(app: rn.App, openai_server: OpenAIServer) -> None:
    from romancy_nb.notebook.widgets import InstanceView

    openai_server.reply_text("Lyon")
    iid = await app.start(ai_ask, openai_server.base_url)
    await app.result(iid, timeout=20)
    (row,) = InstanceView(app, iid).timeline.steps
    assert row["output"] == "name a city → Lyon"


async def test_streamed_tokens_show_live_in_ipython(
    app: rn.App, openai_server: OpenAIServer
) -> None:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()  # an IPython is running: the display handle is updated
    openai_server.reply_text("Lyon is big")
    with capture_output() as shown:
        iid = await app.start(ai_ask, openai_server.base_url, True)
        assert await app.result(iid, timeout=20) == "Lyon is big"
    texts = [output.data["text/plain"] for output in shown.outputs]
    assert texts == ["", "Lyon ", "Lyon is ", "Lyon is big"]
