"""The stand-in server speaks the protocol the real ``openai`` client reads."""

from __future__ import annotations

import json

import openai
import pytest

from tests.ai.openai_server import OpenAIServer, Reply, ToolCall

MESSAGES = [{"role": "user", "content": "say hello to the test"}]


def client(server: OpenAIServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)


async def test_text_reply_with_usage(openai_server: OpenAIServer) -> None:
    openai_server.reply_text("hello there", prompt_tokens=7, completion_tokens=2)
    async with client(openai_server) as api:
        completion = await api.chat.completions.create(model="m-1", messages=MESSAGES)
    assert completion.model == "m-1"
    assert completion.choices[0].message.content == "hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (7, 2)
    assert openai_server.requests == [{"model": "m-1", "messages": MESSAGES}]


async def test_echo_when_nothing_is_scripted(openai_server: OpenAIServer) -> None:
    async with client(openai_server) as api:
        completion = await api.chat.completions.create(model="m", messages=MESSAGES)
    assert completion.choices[0].message.content == "echo: say hello to the test"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 5


async def test_tool_calls(openai_server: OpenAIServer) -> None:
    openai_server.reply_tool_calls(ToolCall("add", {"a": 1, "b": 2}, id="call_x"))
    async with client(openai_server) as api:
        completion = await api.chat.completions.create(model="m", messages=MESSAGES)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.type == "function"
    assert (call.id, call.function.name) == ("call_x", "add")
    assert json.loads(call.function.arguments) == {"a": 1, "b": 2}


async def test_streamed_text_and_usage(openai_server: OpenAIServer) -> None:
    openai_server.reply_text("one two three")
    pieces: list[str] = []
    usage = None
    async with client(openai_server) as api:
        stream = await api.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)
    assert pieces == ["one ", "two ", "three"]
    assert usage is not None and usage.completion_tokens == 3


async def test_streamed_tool_calls_assemble(openai_server: OpenAIServer) -> None:
    openai_server.reply_tool_calls(ToolCall("look_up", {"city": "Paris", "days": 3}))
    api = client(openai_server)
    async with api, api.chat.completions.stream(model="m", messages=MESSAGES) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_completion()
    (call,) = final.choices[0].message.tool_calls or []
    assert call.function.name == "look_up"
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 3}
    assert final.choices[0].finish_reason == "tool_calls"


async def test_json_reply_parses_into_a_model(openai_server: OpenAIServer) -> None:
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        population: int

    openai_server.reply_json({"name": "Lyon", "population": 520000})
    async with client(openai_server) as api:
        parsed = await api.chat.completions.parse(
            model="m", messages=MESSAGES, response_format=City
        )
    assert parsed.choices[0].message.parsed == City(name="Lyon", population=520000)
    assert openai_server.requests[0]["response_format"]["type"] == "json_schema"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (400, openai.BadRequestError),
    ],
)
async def test_error_status(
    openai_server: OpenAIServer, status: int, error: type[openai.APIStatusError]
) -> None:
    openai_server.reply_error(status, "nope")
    async with client(openai_server) as api:
        with pytest.raises(error) as raised:
            await api.chat.completions.create(model="m", messages=MESSAGES)
    assert raised.value.status_code == status
    assert "nope" in raised.value.message


async def test_stopped_server_refuses_then_serves_again(openai_server: OpenAIServer) -> None:
    port = openai_server.port
    openai_server.stop()
    async with client(openai_server) as api:
        with pytest.raises(openai.APIConnectionError):
            await api.chat.completions.create(model="m", messages=MESSAGES)
        openai_server.start()
        assert openai_server.port == port
        completion = await api.chat.completions.create(model="m", messages=MESSAGES)
    assert completion.choices[0].message.content == "echo: say hello to the test"
    assert len(openai_server.requests) == 1


async def test_a_reply_can_depend_on_the_request(openai_server: OpenAIServer) -> None:
    openai_server.reply(lambda body: Reply(text=f"{len(body['messages'])} message(s)"))
    async with client(openai_server) as api:
        completion = await api.chat.completions.create(model="m", messages=MESSAGES)
    assert completion.choices[0].message.content == "1 message(s)"
    assert openai_server.pending == 0
