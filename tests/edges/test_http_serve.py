"""``romancy-nb serve``: CloudEvents over real HTTP, sent with the official SDK.

Each test starts ``romancy-nb serve --app tests.edges.ingress_app:app`` as a process on a
free loopback port, on the test's database (every backend), and talks to it with httpx.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent

import romancy_nb as rn
import tests.edges.ingress_flows  # noqa: F401  (the waiter runs in this process)
from romancy_nb.testing import eventually, wait_until
from tests.conftest import count_rows
from tests.processes import WorkerProcess

TOKEN = "s3cret-token"
MAX_BODY = 4096
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def server(store_url: str, tmp_path: Path) -> Iterator[str]:
    """The base URL of a ``romancy-nb serve`` process on the test's database."""
    port = _free_port()
    args = ["--app", "tests.edges.ingress_app:app", "--db", store_url, "--port", str(port)]
    args += ["--token", TOKEN, "--max-body", str(MAX_BODY)]
    process = WorkerProcess(args, tmp_path, "serve", env={"ROMANCY_DB": store_url}, command="serve")
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.alive(), process.output()
        try:
            return httpx.get(f"{base}/health/ready", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, timeout=120, message="romancy-nb serve to be ready")
        yield base
    finally:
        code = process.terminate()
        assert code == 0, process.output()


def _event(event_type: str, event_id: str, data: Any, **attributes: Any) -> CloudEvent:
    return CloudEvent({"type": event_type, "source": "/tests", "id": event_id, **attributes}, data)


def _post(base: str, message: ce_http.HTTPMessage, headers: dict[str, str] | None = None) -> Any:
    return httpx.post(
        f"{base}/", content=message.body, headers={**message.headers, **(headers or AUTH)}
    )


def _stored(store_url: str) -> tuple[list[str], int]:
    """The instance ids and the number of channel messages in the database."""
    app = rn.App(store_url)
    try:
        ids = [i.instance_id for i in app.list_instances().instances]
        return ids, count_rows(app.store, "channel_messages")
    finally:
        app.store.close()


def test_health(server: str) -> None:
    assert httpx.get(f"{server}/health/live").json() == {"status": "live"}
    assert httpx.get(f"{server}/health/ready").json() == {"status": "ready"}


async def test_a_structured_event_starts_its_event_handler_once(
    server: str, store_url: str
) -> None:
    event = _event("ingress.signup", "s-1", {"email": "a@x.org", "plan": "pro"})
    first = _post(server, ce_http.to_structured_event(event))
    assert first.status_code == 202, first.text
    assert first.json() == {
        "type": "ingress.signup",
        "id": "s-1",
        "instance_id": "ingress.signup:s-1",
        "duplicate": False,
    }
    again = _post(server, ce_http.to_structured_event(event))  # a redelivery
    assert again.status_code == 202
    assert again.json()["duplicate"] is True
    assert again.json()["instance_id"] == "ingress.signup:s-1"
    async with rn.App(store_url, max_concurrent=0) as client:  # the server runs it
        assert await client.result("ingress.signup:s-1", timeout=60) == "welcome a@x.org (pro)"
    assert _stored(store_url) == (["ingress.signup:s-1"], 1)


async def test_a_binary_event_reaches_a_waiting_instance(server: str, store_url: str) -> None:
    async with rn.App(store_url) as app:
        iid = await app.start("ingress_waiter")
        await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
        message = ce_http.to_binary_event(_event("ingress.paid", "p-1", {"amount": 7}))
        assert message.headers["ce-type"] == "ingress.paid"  # binary mode indeed
        answer = _post(server, message)
        assert answer.status_code == 202, answer.text
        assert answer.json()["instance_id"] is None
        result = await app.result(iid, timeout=60)
        assert result == {"data": {"amount": 7}, "id": "p-1", "source": "/tests"}


def test_a_batch_is_accepted_whole(server: str, store_url: str) -> None:
    events = [
        _event("ingress.signup", "b-1", {"email": "b@x.org"}),
        _event("ingress.private", "b-2", {"item": "x"}),  # no opt-in: only an event
    ]
    body = "[" + ",".join(ce_http.to_structured_event(e).body.decode() for e in events) + "]"
    headers = {"Content-Type": "application/cloudevents-batch+json", **AUTH}
    answer = httpx.post(f"{server}/", content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    accepted = answer.json()["accepted"]
    assert [a["instance_id"] for a in accepted] == ["ingress.signup:b-1", None]
    assert _stored(store_url) == (["ingress.signup:b-1"], 2)


def _structured_body(**attributes: Any) -> bytes:
    return json.dumps({"specversion": "1.0", **attributes}).encode()


def test_rejected_requests_store_nothing(server: str, store_url: str) -> None:
    good = ce_http.to_structured_event(_event("ingress.signup", "r-1", {"email": "r@x.org"}))
    structured = {"Content-Type": "application/cloudevents+json"}
    bad_batch = _structured_body(type="ingress.signup", source="/t", id="r-2", data={})
    cases: list[tuple[bytes, dict[str, str], int, str]] = [
        (good.body, {**good.headers}, 401, "Bearer"),  # no token
        (good.body, {**good.headers, "Authorization": "Bearer wrong"}, 401, "not the one"),
        (b"{not json", {**structured, **AUTH}, 400, "not a valid CloudEvent"),
        (_structured_body(type="t.x", id="r-3"), {**structured, **AUTH}, 400, "source"),
        (_structured_body(type="t.x", source="/t"), {**structured, **AUTH}, 400, "'id'"),
        (good.body, {"Content-Type": "text/plain", **AUTH}, 415, "Content-Type text/plain"),
        (b"x" * (MAX_BODY + 1), {**structured, **AUTH}, 413, f"over {MAX_BODY} bytes"),
        (  # data that does not fit the handler's parameters
            _structured_body(type="ingress.signup", source="/t", id="r-4", data={"plan": 1}),
            {**structured, **AUTH},
            400,
            "email",
        ),
        (  # one bad event refuses the whole batch, the good one included
            b"[" + good.body + b"," + bad_batch + b"]",
            {"Content-Type": "application/cloudevents-batch+json", **AUTH},
            400,
            "email",
        ),
        (  # binary mode with a body that is not JSON
            b"{nope",
            {"ce-specversion": "1.0", "ce-type": "t.x", "ce-source": "/t", "ce-id": "r-5"}
            | {"Content-Type": "application/json", **AUTH},
            400,
            "not valid JSON",
        ),
        (  # binary mode with data romancy_nb cannot store as JSON
            b"\x00\x01",
            {"ce-specversion": "1.0", "ce-type": "t.x", "ce-source": "/t", "ce-id": "r-6"}
            | {"Content-Type": "application/octet-stream", **AUTH},
            415,
            "as JSON",
        ),
    ]
    for body, headers, status, says in cases:
        answer = httpx.post(f"{server}/", content=body, headers=headers)
        assert answer.status_code == status, (says, answer.text)
        assert says in answer.json()["reason"], (says, answer.json())
        assert answer.json()["error"]
    assert _stored(store_url) == ([], 0)


async def test_an_instance_id_of_another_workflow_is_a_conflict(
    server: str, store_url: str
) -> None:
    async with rn.App(store_url, max_concurrent=0) as client:
        await client.start("ingress.private", "x", instance_id="ingress.signup:c-1")
    event = _event("ingress.signup", "c-1", {"email": "c@x.org"})
    answer = _post(server, ce_http.to_structured_event(event))
    assert answer.status_code == 409, answer.text
    assert "already belongs to workflow 'ingress.private'" in answer.json()["reason"]
    assert _stored(store_url) == (["ingress.signup:c-1"], 0)
