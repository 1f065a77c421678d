"""A CloudEvents receiver for the outbox's HTTP tests: a Starlette app served by uvicorn in a
thread of the test process, on a loopback port.

Every request is parsed with the CloudEvents SDK (``from_http``: binary mode if it has
``ce-*`` headers, structured otherwise) and kept as an :class:`Arrival`; the test tells it
how to answer: 503 (with ``Retry-After``) for the next requests, 400 for some event types,
401 without the right bearer token, each request held a while (``hold``), or not listening
at all (``start`` it later, on the same port).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from romancy_nb.testing import wait_until

_CONTEXT = frozenset(
    {"id", "source", "specversion", "type", "datacontenttype", "dataschema", "subject", "time"}
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Arrival:
    """One request that reached the receiver and parsed as a CloudEvent."""

    id: str
    type: str
    source: str
    subject: str | None
    time: Any
    extensions: dict[str, Any]
    data: Any
    mode: str
    """``structured`` or ``binary``: how it was sent."""
    content_type: str
    authorization: str | None
    status: int
    """What the receiver answered."""
    at: float
    """``time.time()`` when it arrived."""


@dataclass
class EventReceiver:
    """``url`` is where to post; ``arrivals`` what came, in order of arrival."""

    port: int = field(default_factory=free_port)
    token: str | None = None
    """If set, a request without ``Authorization: Bearer <token>`` is answered 401."""
    hold: float = 0.0
    """Seconds each request is held before it is answered (a slow receiver)."""
    arrivals: list[Arrival] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    """Requests that were not valid CloudEvents (the SDK's error): none, in every test."""
    refused: set[str] = field(default_factory=set)
    """Event types answered 400."""
    in_flight: int = 0
    """Requests being received or held now (a relayer killed now dies mid-delivery)."""
    _unavailable: deque[str | None] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def unavailable(self, *retry_after: str | None) -> None:
        """Answer the next requests 503, one per value, with that ``Retry-After`` (or none)."""
        with self._lock:
            self._unavailable.extend(retry_after)

    def delivered(self) -> list[Arrival]:
        """The arrivals answered 2xx, in order."""
        with self._lock:
            return [a for a in self.arrivals if 200 <= a.status < 300]

    def all(self) -> list[Arrival]:
        with self._lock:
            return list(self.arrivals)

    # -- life ------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on ``port`` (until then, connections to it are refused)."""
        assert self._thread is None, "the receiver is already listening"
        config = uvicorn.Config(
            Starlette(routes=[Route("/events", self._receive, methods=["POST"])]),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        server = self._server = uvicorn.Server(config)
        thread = self._thread = threading.Thread(
            target=server.run, name="event-receiver", daemon=True
        )
        thread.start()
        wait_until(
            lambda: server.started or not thread.is_alive(),
            timeout=30,
            message="the event receiver to listen",
        )
        assert server.started, f"the event receiver did not start on port {self.port}"

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._server = None
        self._thread = None

    def __enter__(self) -> EventReceiver:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- protocol --------------------------------------------------------------------

    async def _receive(self, request: Request) -> Response:
        self.in_flight += 1  # the server's one event loop: no lock needed
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: Request) -> Response:
        arrived = time.time()
        body = await request.body()
        headers = dict(request.headers)
        authorization = headers.get("authorization")
        if self.token is not None and authorization != f"Bearer {self.token}":
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        try:
            event = ce_http.from_http(ce_http.HTTPMessage(headers, body), JSONFormat())
        except Exception as error:
            with self._lock:
                self.invalid.append(f"{type(error).__name__}: {error}")
            return JSONResponse({"error": "not a valid CloudEvent"}, status_code=400)
        with self._lock:
            retry_after = self._unavailable.popleft() if self._unavailable else False
        if retry_after is not False:
            status, answer = 503, Response("busy", status_code=503)
            if retry_after is not None:
                answer.headers["Retry-After"] = retry_after
        elif event.get_type() in self.refused:
            status, answer = 400, Response("no such type", status_code=400)
        else:
            status, answer = 202, Response(status_code=202)
        attributes = event.get_attributes()
        arrival = Arrival(
            id=event.get_id(),
            type=event.get_type(),
            source=event.get_source(),
            subject=event.get_subject(),
            time=event.get_time(),
            extensions={k: v for k, v in attributes.items() if k not in _CONTEXT},
            data=event.get_data(),
            mode="binary" if any(k.startswith("ce-") for k in headers) else "structured",
            content_type=headers.get("content-type", ""),
            authorization=authorization,
            status=status,
            at=arrived,
        )
        with self._lock:
            self.arrivals.append(arrival)
        if self.hold:
            await asyncio.sleep(self.hold)
        return answer


__all__ = ["Arrival", "EventReceiver", "free_port"]
