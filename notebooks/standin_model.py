"""A stand-in for an LLM server, so the agent notebook runs offline and deterministically.

It answers ``POST /v1/chat/completions`` in the OpenAI format, on a free loopback port, from a
daemon thread. An agent that offers a ``refund`` tool is asked to call it for the amount in the
last user message (``refund 25``); once the tool's result (or its rejection) is in the
messages, the answer reports it. Without tools, the answer is a draft built from the last
user message.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    calls = 0

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls += 1
        reply = {
            "id": f"standin-{type(self).calls}",
            "object": "chat.completion",
            "model": body.get("model", "standin"),
            "choices": [_choice(body)],
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:  # keep the notebook's output clean
        pass


def _choice(body: dict[str, Any]) -> dict[str, Any]:
    """The answer to one request: a refund call, the tool's outcome, or a draft."""
    last = body["messages"][-1]
    tools = [tool["function"]["name"] for tool in body.get("tools", [])]
    if last["role"] == "tool":
        message = {"role": "assistant", "content": f"Done: {last['content']}"}
        return {"index": 0, "message": message, "finish_reason": "stop"}
    if "refund" in tools:
        amount = int((re.findall(r"\d+", last["content"]) or ["0"])[-1])
        call = {
            "id": f"refund-{amount}",
            "type": "function",
            "function": {"name": "refund", "arguments": json.dumps({"amount": amount})},
        }
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        return {"index": 0, "message": message, "finish_reason": "tool_calls"}
    message = {"role": "assistant", "content": f"Draft reply to: {last['content']}"}
    return {"index": 0, "message": message, "finish_reason": "stop"}


def serve() -> str:
    """Start the server on a free port; return its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def calls() -> int:
    """How many completions the server has answered."""
    return _Handler.calls
