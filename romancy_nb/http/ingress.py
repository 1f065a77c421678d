"""CloudEvents over HTTP: an ASGI app (Starlette) that stores the events it receives.

``POST /`` takes one event in structured mode (``Content-Type:
application/cloudevents+json``), in binary mode (``ce-*`` headers, the data as the body) or
a batch (``application/cloudevents-batch+json``, a JSON array of structured events), all
parsed with the CloudEvents SDK. Each event goes to ``App.send_event``'s two halves: an
event whose type names an ``event_handler=True`` workflow starts it, and instances waiting
for the type receive it. The answer is 202 with, per event, its id, the instance it
started (or None) and whether it was a duplicate (same type and id, delivered once).

A request is refused whole, before anything is stored, with a JSON ``{"error", "reason"}``:
401 without the bearer token (when one is set), 413 over ``max_body`` bytes, 415 for a
content type that is no CloudEvents mode or data that is not JSON (romancy_nb stores event
data as JSON), 400 for malformed JSON, a missing required attribute (``id`` included: the
SDK would invent one, and the id is what makes redelivery safe) or data that does not fit
the event-handler workflow. A batch is checked whole first, then stored event by event; a
store failure answers 503, and sending the batch again is safe. 409: the event's instance
id (``TYPE:ID``) belongs to an instance of another workflow, started with that id by hand.

``GET /health/live`` answers 200 while the process serves; ``GET /health/ready`` 200 once
the store answers a read, else 503. Neither needs the token (probes carry none).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.bindings.common import get_event_factory_for_version
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from romancy_nb.errors import InvalidWorkflowState, RomancyError, StoreError

if TYPE_CHECKING:
    from romancy_nb.engine.app import App
    from romancy_nb.engine.handlers import EventReceipt, PreparedEvent

DEFAULT_MAX_BODY = 1 << 20
"""Bytes a request body may have (1 MiB) unless ``max_body`` says otherwise."""

READY_TIMEOUT = 5.0
"""Seconds ``/health/ready`` waits for the store (a locked one retries in place)."""

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
_JSON_DATA = JSONFormat.JSON_CONTENT_TYPE_PATTERN
_FORMAT = JSONFormat()
_STANDARD = {"id", "source", "type", "specversion", "time", "subject", "datacontenttype"}
_STANDARD |= {"dataschema", "schemaurl", "datacontentencoding"}


class Refused(Exception):
    """A request refused whole: its status and the reason the client is told."""

    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.error, self.reason = status, error, reason

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        body = {"error": self.error, "reason": self.reason}
        return JSONResponse(body, status_code=self.status, headers=headers)


def create_app(
    app: App, *, token: str | None = None, max_body: int = DEFAULT_MAX_BODY
) -> Starlette:
    """The ASGI app receiving CloudEvents for ``app`` (what ``app.asgi()`` returns).

    Its lifespan opens ``app`` on the server's loop and closes it at shutdown if it opened
    it; mounted inside another ASGI app (whose lifespan runs instead), ``app`` opens at the
    first event that starts a workflow.
    """
    if max_body < 1:
        raise ValueError(f"max_body must be a positive number of bytes, not {max_body!r}")
    if token is not None and not token:
        raise ValueError("token must be a non-empty string, or None for no token")

    async def receive(request: Request) -> Response:
        try:
            _authorize(request, token)
            body = await _read_body(request, max_body)
            prepared = [_prepare(app, event) for event in _parse(request, body)]
        except Refused as refused:
            return refused.response()
        try:
            receipts = [await app.deliver_event(event) for event in prepared]
        except StoreError as error:
            return Refused(503, "store unavailable", str(error)).response()
        except InvalidWorkflowState as error:  # its instance id names another workflow's
            return Refused(409, "conflict", _reason(error)).response()
        answers = [_receipt(receipt) for receipt in receipts]
        if _is_batch(request):
            return JSONResponse({"accepted": answers}, status_code=202)
        return JSONResponse(answers[0], status_code=202)

    async def live(request: Request) -> Response:
        return JSONResponse({"status": "live"})

    async def ready(request: Request) -> Response:
        try:
            await asyncio.wait_for(app.ping(), READY_TIMEOUT)
        except (StoreError, TimeoutError) as error:
            reason = str(error) or f"the store did not answer within {READY_TIMEOUT:g} s"
            return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
        return JSONResponse({"status": "ready"})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        opened = not app.is_open
        if opened:
            await app.open()
        try:
            yield
        finally:
            if opened:
                await app.close()

    routes = [
        Route("/", receive, methods=["POST"]),
        Route("/health/live", live, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _authorize(request: Request, token: str | None) -> None:
    if token is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, credentials = given.partition(" ")
    if scheme.lower() != "bearer" or not credentials:
        raise Refused(401, "unauthorized", "send Authorization: Bearer <token>")
    if not hmac.compare_digest(credentials.strip().encode(), token.encode()):
        raise Refused(401, "unauthorized", "the bearer token is not the one this server takes")


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to exceed ``limit`` bytes: from its
    Content-Length, else while it streams in, so an oversized body is never held whole."""
    too_big = Refused(413, "too large", f"the request body is over {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
    except ClientDisconnect:
        raise Refused(400, "bad request", "the client went away mid-body") from None
    return b"".join(chunks)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _is_batch(request: Request) -> bool:
    return _media_type(request) == BATCH


def _is_binary(request: Request) -> bool:
    return any(name.lower().startswith(ce_http.CE_PREFIX) for name in request.headers)


def _parse(request: Request, body: bytes) -> list[BaseCloudEvent]:
    """The events of the request, parsed by the SDK in the mode its headers say."""
    media = _media_type(request)
    try:
        if _is_binary(request):
            return [_binary(request, body, media)]
        if media == STRUCTURED:
            return [_structured(body)]
        if media == BATCH:
            return [_structured(item, i) for i, item in enumerate(_batch_items(body))]
    except (BaseCloudEventException, ValueError, TypeError, KeyError) as error:
        raise Refused(400, "bad request", f"not a valid CloudEvent: {_reason(error)}") from None
    shown = media or "none"
    raise Refused(
        415,
        "unsupported media type",
        f"Content-Type {shown}: send {STRUCTURED}, {BATCH}, or binary mode (ce-* headers)",
    )


def _binary(request: Request, body: bytes, media: str) -> BaseCloudEvent:
    if body and media and not _JSON_DATA.match(media):
        raise Refused(415, "unsupported media type", _NOT_JSON.format(media))
    headers = {name: value for name, value in request.headers.items()}
    event = ce_http.from_binary(ce_http.HTTPMessage(headers, body), _FORMAT, _checked_factory)
    data = event.get_data()
    # The SDK falls back to the text of a JSON body it cannot parse; a parsed JSON string
    # never equals its own text (the quotes), so equality means the body is not JSON.
    if isinstance(data, str) and data == body.decode("utf-8", errors="replace"):
        raise ValueError("the body is not valid JSON")
    return event


_NOT_JSON = "event data of type {} cannot be stored: romancy_nb stores event data as JSON"


def _structured(body: bytes | str, index: int | None = None) -> BaseCloudEvent:
    try:
        return _FORMAT.read(_checked_factory, body)
    except (BaseCloudEventException, ValueError, TypeError, KeyError) as error:
        if index is None:
            raise
        raise ValueError(f"event {index} of the batch: {_reason(error)}") from None


def _batch_items(body: bytes) -> list[str]:
    """The events of a batch, each re-encoded for the SDK, which reads one at a time."""
    items = json.loads(body)
    if not isinstance(items, list) or not items:
        raise ValueError("a batch is a non-empty JSON array of events")
    return [json.dumps(item) for item in items]


def _checked_factory(attributes: dict[str, Any], data: Any) -> BaseCloudEvent:
    """The SDK's own event class, after checking what it would fill in silently: an event
    without ``id`` would get a new UUID, and redelivery would store it twice."""
    if not isinstance(attributes, dict):
        raise ValueError("an event is a JSON object")
    for name in ("id", "specversion"):
        if name not in attributes:
            raise ValueError(f"missing required attribute {name!r}")
    return get_event_factory_for_version(attributes["specversion"])(attributes, data)


def _prepare(app: App, event: BaseCloudEvent) -> PreparedEvent:
    attributes = event.get_attributes()
    data = event.get_data()
    where = f"event {event.get_id()!r} ({event.get_type()})"
    if isinstance(data, bytes | bytearray):
        raise Refused(415, "unsupported media type", f"{where}: {_NOT_JSON.format('bytes')}")
    extensions = {k: v for k, v in attributes.items() if k not in _STANDARD}
    try:
        return app.prepare_event(
            event.get_type(),
            data,
            source=event.get_source(),
            id=event.get_id(),
            time=event.get_time(),
            subject=event.get_subject(),
            extensions=extensions or None,
        )
    except (RomancyError, ValueError, TypeError) as error:
        raise Refused(400, "bad request", f"{where}: {_reason(error)}") from None


def _receipt(receipt: EventReceipt) -> dict[str, Any]:
    return {
        "type": receipt.type,
        "id": receipt.id,
        "instance_id": receipt.instance_id,
        "duplicate": receipt.duplicate,
    }


def _reason(error: BaseException) -> str:
    return re.sub(r"\s+", " ", str(error)).strip() or type(error).__name__


__all__ = ["BATCH", "DEFAULT_MAX_BODY", "STRUCTURED", "Refused", "create_app"]
