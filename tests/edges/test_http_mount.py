"""``app.asgi()`` mounted inside another ASGI app, whose lifespan runs instead of its own."""

from __future__ import annotations

import httpx
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent
from starlette.applications import Starlette
from starlette.routing import Mount

import romancy_nb as rn
import tests.edges.ingress_flows  # noqa: F401  (the event-handler workflow)


async def test_a_mounted_ingress_opens_the_app_at_the_first_start(store_url: str) -> None:
    app = rn.App(store_url)
    parent = Starlette(routes=[Mount("/events", app=app.asgi(token="t"))])
    transport = httpx.ASGITransport(app=parent)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            ready = await client.get("/events/health/ready")
            assert ready.status_code == 200, ready.text
            assert not app.is_open  # a readiness probe does not open the app
            event = CloudEvent(
                {"type": "ingress.signup", "source": "/t", "id": "m-1"}, {"email": "m@x.org"}
            )
            message = ce_http.to_structured_event(event)
            headers = {**message.headers, "Authorization": "Bearer t"}
            answer = await client.post("/events/", content=message.body, headers=headers)
            assert answer.status_code == 202, answer.text
            assert answer.json()["instance_id"] == "ingress.signup:m-1"
            assert app.is_open
            assert await app.result("ingress.signup:m-1", timeout=60) == "welcome m@x.org (free)"
    finally:
        await app.close()
