"""A local stand-in for an OpenAI chat-completions server, for tests with the real clients.

No hosted model is reachable from the tests, so this Starlette app speaks the protocol the
``openai`` package and Pydantic AI's OpenAI provider use: ``POST /v1/chat/completions``,
a JSON ``chat.completion`` reply, or (``stream=true``) server-sent ``chat.completion.chunk``
events ending in ``data: [DONE]``, with a usage chunk when
``stream_options.include_usage`` asks for one. Tool calls come in both modes.

A test scripts the replies in order (:meth:`OpenAIServer.reply_text`,
:meth:`~OpenAIServer.reply_tool_calls`, :meth:`~OpenAIServer.reply_json`,
:meth:`~OpenAIServer.reply_error`, or a function of the request); with nothing scripted
the server echoes the last user message, so an agent loop that ends on text needs no
script. ``requests`` holds every request body received, and ``stop()``/``start()`` take
the server away and bring it back on the same port (replay must not need it).

A client should be built with ``max_retries=0``: the openai client retries 429 and 5xx
by itself, and the tests check the engine's retries, not the client's.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asks for: its name and its JSON-encodable arguments."""

    name: str
    arguments: dict[str, Any]
    id: str | None = None
    """The call's id; ``call_<n>`` (counting across the server's life) when not given."""


@dataclass(frozen=True)
class Reply:
    """One scripted answer: text, tool calls, or an HTTP error status."""

    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    status: int = 200
    error_message: str = ""
    prompt_tokens: int | None = None
    """Usage reported for the prompt; a word count of the messages' contents if None."""
    completion_tokens: int | None = None
    """Usage reported for the answer; a word count of the text and arguments if None."""
    finish_reason: str | None = None
    """``stop`` for text, ``tool_calls`` for calls, unless given (``length``...)."""


Script = Reply | Callable[[dict[str, Any]], Reply]
"""A reply, or a function from the request body to the reply (for answers that depend
on the prompt)."""

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_exceeded",
}


def _words(value: Any) -> int:
    """A stand-in token count: the words of every string inside ``value``."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, dict):
        return sum(_words(item) for item in value.values())
    if isinstance(value, list):
        return sum(_words(item) for item in value)
    return 0


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(
                part.get("text", "") for part in content or [] if part.get("type") == "text"
            )
    return ""


@dataclass
class _Answer:
    """A reply made concrete for one request: ids given, usage counted."""

    reply: Reply
    tool_calls: list[dict[str, Any]]
    usage: dict[str, int]
    finish_reason: str


@dataclass
class OpenAIServer:
    """The stand-in server, run by uvicorn in a background thread on a loopback port."""

    host: str = "127.0.0.1"
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    """Every request body received, in order (errors scripted with reply_error included)."""
    _script: deque[Script] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    _ids: Iterator[int] = field(default_factory=itertools.count)

    @property
    def base_url(self) -> str:
        """What ``openai.AsyncOpenAI(base_url=...)`` takes."""
        return f"http://{self.host}:{self.port}/v1"

    # -- scripting -------------------------------------------------------------------

    def reply(self, *replies: Script) -> None:
        """Queue replies, answered one per request in order."""
        with self._lock:
            self._script.extend(replies)

    def reply_text(self, text: str, **usage: int) -> None:
        """Queue a text answer (``prompt_tokens=`` / ``completion_tokens=`` override usage)."""
        self.reply(Reply(text=text, **usage))

    def reply_json(self, value: Any, **usage: int) -> None:
        """Queue an answer whose text is ``value`` as JSON (structured output)."""
        self.reply(Reply(text=json.dumps(value), **usage))

    def reply_tool_calls(self, *calls: ToolCall, text: str | None = None) -> None:
        """Queue an answer asking for these tool calls (with optional text beside them)."""
        self.reply(Reply(text=text, tool_calls=calls))

    def reply_error(self, status: int, message: str = "") -> None:
        """Queue an HTTP error (429 rate limit, 500 server error, 400 bad request...)."""
        self.reply(Reply(status=status, error_message=message or f"scripted error {status}"))

    @property
    def pending(self) -> int:
        """How many scripted replies no request has taken yet."""
        with self._lock:
            return len(self._script)

    # -- life ------------------------------------------------------------------------

    def start(self) -> None:
        """Serve on ``port`` (a free one picked on first start, the same one after)."""
        if self._thread is not None:
            return
        if self.port == 0:
            with socket.socket() as probe:
                probe.bind((self.host, 0))
                self.port = probe.getsockname()[1]
        config = uvicorn.Config(
            self._app(),
            host=self.host,
            port=self.port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="openai-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the stand-in OpenAI server did not start on {self.port}")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving: a request now fails to connect (``openai.APIConnectionError``)."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    # -- protocol --------------------------------------------------------------------

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._completions, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": []})

    def _next(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(body)
            script = self._script.popleft() if self._script else None
        if script is None:
            return Reply(text=f"echo: {_last_user_text(body)}")
        return script(body) if callable(script) else script

    def _answer(self, body: dict[str, Any], reply: Reply) -> _Answer:
        calls = [
            {
                "id": call.id or f"call_{next(self._ids)}",
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call in reply.tool_calls
        ]
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = sum(_words(message.get("content")) for message in body.get("messages", []))
        completion = reply.completion_tokens
        if completion is None:
            completion = _words(reply.text or "") + sum(
                len(call["function"]["arguments"].split()) for call in calls
            )
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        finish = reply.finish_reason or ("tool_calls" if calls else "stop")
        return _Answer(reply, calls, usage, finish)

    async def _completions(self, request: Request) -> Response:
        body = await request.json()
        reply = self._next(body)
        if reply.status != 200:
            error = {
                "message": reply.error_message,
                "type": _ERROR_TYPES.get(reply.status, "server_error"),
                "param": None,
                "code": None,
            }
            return JSONResponse({"error": error}, status_code=reply.status)
        answer = self._answer(body, reply)
        model = str(body.get("model", "stand-in"))
        completion_id = f"chatcmpl-{next(self._ids)}"
        created = int(time.time())
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = _chunks(answer, completion_id, created, model, include_usage)
            return StreamingResponse(_events(chunks), media_type="text/event-stream")
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.text,
            "refusal": None,
            "tool_calls": answer.tool_calls or None,
        }
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": answer.finish_reason,
                    }
                ],
                "usage": answer.usage,
                "system_fingerprint": "stand-in",
            }
        )


def _pieces(text: str) -> list[str]:
    """The text cut after each space, as tokens arrive: the pieces join back to ``text``."""
    pieces: list[str] = []
    start = 0
    for index, char in enumerate(text):
        if char == " ":
            pieces.append(text[start : index + 1])
            start = index + 1
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def _chunks(
    answer: _Answer, completion_id: str, created: int, model: str, include_usage: bool
) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of one streamed answer, in order."""

    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> Any:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "stand-in",
            "choices": choices,
            "usage": usage,
        }

    def delta(values: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": values, "logprobs": None, "finish_reason": finish}]

    yield chunk(delta({"role": "assistant", "content": ""}))
    for piece in _pieces(answer.reply.text or ""):
        yield chunk(delta({"content": piece}))
    for index, call in enumerate(answer.tool_calls):
        head = {"name": call["function"]["name"], "arguments": ""}
        yield chunk(
            delta(
                {
                    "tool_calls": [
                        {"index": index, "id": call["id"], "type": "function", "function": head}
                    ]
                }
            )
        )
        for piece in _pieces(call["function"]["arguments"]):
            yield chunk(delta({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    yield chunk(delta({}, answer.finish_reason))
    if include_usage:
        yield chunk([], answer.usage)


async def _events(chunks: Iterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    for item in chunks:
        yield f"data: {json.dumps(item)}\n\n".encode()
    yield b"data: [DONE]\n\n"
