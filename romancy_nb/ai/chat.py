"""``rn.ai.chat``: one chat-completions request to an OpenAI-compatible server, as a step.

The request (model, messages, parameters) is the step's recorded input and the answer
(text, tool calls, token usage, latency) its recorded output, so a replay, a resume after
a crash or a rewind before a later step returns the recorded answer without asking the
model again. The client is not part of the input: it cannot be stored, and a replay does
not need it; it reaches the step through a closure.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from romancy_nb.engine import Activity, ActivityContext, RetryPolicy, WorkflowContext
from romancy_nb.errors import TerminalError

STEP_NAME = "rn.ai.chat"
"""The activity name of every model call: ``rn.llm_calls()`` finds them by it."""

M = TypeVar("M", bound=BaseModel)


class Usage(BaseModel):
    """Tokens the server reported for one call (0 when it reported none)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatRequest(BaseModel):
    """A model call's recorded input: what was asked, never the client that asked."""

    model: str
    messages: list[dict[str, Any]]
    params: dict[str, Any] = {}
    response_format: dict[str, Any] | None = None
    stream: bool = False


class ChatAnswer(BaseModel):
    """A model call's recorded output: the whole answer, its usage and its latency."""

    content: str | None
    tool_calls: list[dict[str, Any]] = []
    finish_reason: str | None = None
    model: str
    usage: Usage = Usage()
    latency: float
    """Seconds from sending the request to the last byte of the answer."""


def _transient(error: BaseException) -> bool:
    """Whether asking again may help: lost connections, rate limits, 5xx (not 4xx)."""
    import openai

    if isinstance(error, openai.APIConnectionError):  # timeouts included
        return True
    if isinstance(error, openai.APIStatusError):
        return error.status_code in (408, 409, 429) or error.status_code >= 500
    return False


def _response_format(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": model.__name__, "schema": model.model_json_schema()},
    }


class _LiveOutput:
    """Streamed tokens shown in the notebook output while they arrive (nothing elsewhere).

    IPython is looked up, never imported: a script or a worker has no display to update.
    """

    def __init__(self) -> None:
        self.text = ""
        self._handle: Any = None
        ipython = sys.modules.get("IPython")
        if ipython is not None and ipython.get_ipython() is not None:
            from IPython.display import display

            self._handle = display(self._bundle(), raw=True, display_id=True)

    def _bundle(self) -> dict[str, str]:
        return {"text/plain": self.text, "text/markdown": self.text}

    def add(self, piece: str) -> None:
        self.text += piece
        if self._handle is not None:
            self._handle.update(self._bundle(), raw=True)


async def _streamed(client: Any, request: ChatRequest) -> ChatAnswer:
    started = time.monotonic()
    stream = await client.chat.completions.create(
        model=request.model,
        messages=request.messages,
        stream=True,
        stream_options={"include_usage": True},
        **_extra(request),
    )
    live = _LiveOutput()
    calls: dict[int, dict[str, Any]] = {}
    finish: str | None = None
    model = request.model
    usage = Usage()
    async for chunk in stream:
        model = chunk.model or model
        if chunk.usage is not None:
            usage = Usage(
                prompt_tokens=chunk.usage.prompt_tokens,
                completion_tokens=chunk.usage.completion_tokens,
            )
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            if choice.delta.content:
                live.add(choice.delta.content)
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(
                    delta.index,
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                call["id"] = delta.id or call["id"]
                if delta.function is not None:
                    call["function"]["name"] += delta.function.name or ""
                    call["function"]["arguments"] += delta.function.arguments or ""
    return ChatAnswer(
        content=live.text if live.text or not calls else None,
        tool_calls=[calls[index] for index in sorted(calls)],
        finish_reason=finish,
        model=model,
        usage=usage,
        latency=time.monotonic() - started,
    )


async def _whole(client: Any, request: ChatRequest) -> ChatAnswer:
    started = time.monotonic()
    completion = await client.chat.completions.create(
        model=request.model, messages=request.messages, **_extra(request)
    )
    choice = completion.choices[0]
    usage = completion.usage
    return ChatAnswer(
        content=choice.message.content,
        tool_calls=[call.model_dump(mode="json") for call in choice.message.tool_calls or []],
        finish_reason=choice.finish_reason,
        model=completion.model,
        usage=Usage(
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        ),
        latency=time.monotonic() - started,
    )


def _extra(request: ChatRequest) -> dict[str, Any]:
    if request.response_format is None:
        return request.params
    return {**request.params, "response_format": request.response_format}


def _step(
    client: Any,
    response_format: type[BaseModel] | None,
    on_invalid: Literal["retry", "raise"],
    retry: RetryPolicy | None,
) -> Activity[Any, ChatAnswer]:
    """The activity of one call; the client and the answer's model live in its closure."""

    async def call(ctx: ActivityContext, request: ChatRequest) -> ChatAnswer:
        try:
            answer = await (_streamed if request.stream else _whole)(client, request)
        except Exception as error:
            if _transient(error):
                raise
            raise TerminalError(f"model call failed: {error}") from error
        if response_format is not None:
            try:
                response_format.model_validate_json(answer.content or "")
            except ValidationError as error:
                message = f"the answer is not a valid {response_format.__name__}: {error}"
                if on_invalid == "raise":
                    raise TerminalError(message) from error
                raise ValueError(message) from error
        return answer

    return Activity(call, name=STEP_NAME, retry=retry, transactional=False)


async def chat(
    ctx: WorkflowContext,
    client: Any,
    *,
    model: str,
    messages: list[dict[str, Any]],
    response_format: type[M] | None = None,
    stream: bool = False,
    retry: RetryPolicy | None = None,
    on_invalid: Literal["retry", "raise"] = "retry",
    **params: Any,
) -> Any:
    """Ask the model once, as a recorded step of the workflow whose context is ``ctx``.

    ``client`` is an ``openai.AsyncOpenAI`` (any OpenAI-compatible server). ``params`` go to
    ``chat.completions.create`` as they are (``temperature``, ``tools``...) and are
    recorded. Transient errors (connection, 429, 5xx) are retried by ``retry`` (the app's
    default policy when None); other errors fail the step at once.

    Returns the :class:`ChatAnswer`, or with ``response_format`` (a pydantic model) the
    answer validated into it; an invalid answer asks again (``on_invalid="retry"``) or
    fails the step (``"raise"``). With ``stream=True`` the tokens show live in the
    notebook's output while they arrive; the whole answer is what is recorded.
    """
    if on_invalid not in ("retry", "raise"):
        raise ValueError(f"on_invalid must be 'retry' or 'raise', not {on_invalid!r}")
    if response_format is not None and not (
        isinstance(response_format, type) and issubclass(response_format, BaseModel)
    ):
        raise TypeError(f"response_format must be a pydantic model class, not {response_format!r}")
    request = ChatRequest(
        model=model,
        messages=messages,
        params=params,
        response_format=_response_format(response_format) if response_format else None,
        stream=stream,
    )
    answer: ChatAnswer = await _step(client, response_format, on_invalid, retry)(ctx, request)
    if response_format is not None:
        return response_format.model_validate_json(answer.content or "")
    return answer
