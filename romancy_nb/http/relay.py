"""The outbox's HTTP sender: each event POSTed to the broker as a CloudEvent.

``App(broker_url=...)`` uses it (:mod:`romancy_nb.engine.outbox` decides what to send and
when). Events are written with the CloudEvents SDK — structured mode
(``application/cloudevents+json``) by default, binary mode (``ce-*`` headers) on request —
and posted with httpx, one client (a connection pool) for the app's life.

What a response means, as brokers use HTTP: any 2xx is delivered; 408, 425, 429 and 5xx,
a timeout or a connection error are transient (the relayer retries, honouring a
``Retry-After`` of seconds); any other status is the receiver refusing the event, which
sending it again cannot change (failed, with the status and the start of the body).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Literal

import httpx
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from romancy_nb.engine.outbox import Delivery, cloud_event_attributes
from romancy_nb.store.protocol import OutboxRecord

_FORMAT = JSONFormat()
_TRANSIENT = frozenset({408, 425, 429})
_REASON_CHARS = 200


class HttpEventSender:
    """Posts outbox events to ``url`` (an :class:`~romancy_nb.engine.outbox.EventSender`).

    ``mode``: ``"structured"`` or ``"binary"``; ``headers``: sent with every request (an
    ``Authorization`` for the broker, say); ``timeout``: seconds per request.
    """

    def __init__(
        self,
        url: str,
        *,
        mode: Literal["structured", "binary"] = "structured",
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        if mode not in ("structured", "binary"):
            raise ValueError(f"mode must be 'structured' or 'binary', not {mode!r}")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the broker URL must be http:// or https://, not {url!r}")
        self.url = url
        self.mode = mode
        self._client = httpx.AsyncClient(headers=dict(headers or {}), timeout=timeout)

    async def send(self, event: OutboxRecord) -> Delivery:
        attributes = cloud_event_attributes(event)
        if self.mode == "binary":  # ce-* headers carry the canonical strings: true, not True
            attributes = {
                k: ("true" if v else "false") if isinstance(v, bool) else v
                for k, v in attributes.items()
            }
        cloud_event = CloudEvent(attributes, json.loads(event.data))
        write = ce_http.to_structured if self.mode == "structured" else ce_http.to_binary
        message = write(cloud_event, _FORMAT)
        try:
            response = await self._client.post(
                self.url, headers=message.headers, content=message.body
            )
        except httpx.TransportError as error:  # down, refused, timed out: try again later
            return Delivery("retry", f"{type(error).__name__}: {error}")
        status = response.status_code
        if 200 <= status < 300:
            return Delivery("delivered")
        reason = f"HTTP {status} from {self.url}: {response.text[:_REASON_CHARS]}"
        if status in _TRANSIENT or status >= 500:
            return Delivery("retry", reason, _retry_after(response))
        return Delivery("failed", reason)

    async def aclose(self) -> None:
        await self._client.aclose()


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (the HTTP-date form is rare from brokers: ignored)."""
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


__all__ = ["HttpEventSender"]
