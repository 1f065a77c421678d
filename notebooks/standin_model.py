"""A stand-in for an LLM server, so the agent notebook runs offline and deterministically.

It answers ``POST /v1/chat/completions`` in the OpenAI format with a canned reply built from
the last user message, on a free loopback port, from a daemon thread.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    calls = 0

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        type(self).calls += 1
        reply = {
            "id": f"standin-{type(self).calls}",
            "object": "chat.completion",
            "model": body.get("model", "standin"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"Draft reply to: {prompt}"},
                    "finish_reason": "stop",
                }
            ],
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:  # keep the notebook's output clean
        pass


def serve() -> str:
    """Start the server on a free port; return its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def calls() -> int:
    """How many completions the server has answered."""
    return _Handler.calls
