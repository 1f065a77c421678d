"""Workflows as MCP tools: ``romancy-nb mcp`` as a real process, driven by the MCP SDK's
own client over stdio (the process spawned by ``stdio_client``) and over streamable HTTP
(a server on a loopback port), on every backend."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.client import Client, ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

import romancy_nb as rn
import romancy_nb.ai
from romancy_nb.engine.definitions import Workflow
from romancy_nb.engine.registry import Registry
from romancy_nb.testing import eventually, wait_until
from tests.processes import REPO, WorkerProcess

APP = "tests.ai.mcp_app:app"
Connect = Callable[[str, Path], AbstractAsyncContextManager[ClientSession]]


@asynccontextmanager
async def _stdio(store_url: str, tmp_path: Path, *extra: str) -> AsyncIterator[ClientSession]:
    """A session with a ``romancy-nb mcp`` process that ``stdio_client`` spawns."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "romancy_nb.cli", "mcp", "--app", APP, "--db", store_url, *extra],
        env={"ROMANCY_DB": store_url, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    with (tmp_path / "mcp.err").open("w") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def _http(store_url: str, tmp_path: Path) -> AsyncIterator[ClientSession]:
    port = _free_port()
    args = ["--app", APP, "--db", store_url, "--http", "--port", str(port)]
    process = WorkerProcess(args, tmp_path, "mcp", env={"ROMANCY_DB": store_url}, command="mcp")
    url = f"http://127.0.0.1:{port}/mcp"

    def listening() -> bool:
        assert process.alive(), process.output()
        try:
            httpx.get(url, timeout=5)
        except httpx.TransportError:
            return False
        return True

    try:
        wait_until(listening, timeout=120, message="romancy-nb mcp --http to listen")
        async with (
            streamable_http_client(url) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session
    finally:
        code = process.terminate()
        assert code == 0, process.output()


@pytest.fixture(params=["stdio", "http"])
def connect(request: pytest.FixtureRequest) -> Connect:
    return {"stdio": _stdio, "http": _http}[request.param]


async def _call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def _refusal(session: ClientSession, tool: str, **arguments: Any) -> str:
    result = await session.call_tool(tool, arguments)
    assert result.is_error, result
    text: str = result.content[0].text  # type: ignore[union-attr]
    return text


def _instances(store_url: str) -> list[rn.InstanceInfo]:
    app = rn.App(store_url, max_concurrent=0)
    try:
        return app.list_instances().instances
    finally:
        app.store.close()


async def test_tools_start_a_workflow_and_give_its_result(
    connect: Connect, store_url: str, tmp_path: Path
) -> None:
    async with connect(store_url, tmp_path) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert {"start_mcp.order", "start_mcp.approval", "instance_status", "instance_result",
                "send_event", "list_instances", "cancel_instance"} <= set(tools)  # fmt: skip
        order = tools["start_mcp.order"]
        assert order.input_schema["required"] == ["order"]
        assert set(order.input_schema["properties"]) == {"order", "note"}
        assert "Place an order." in (order.description or "")

        started = await _call(session, "start_mcp.order", order={"item": "tea", "quantity": 4})
        iid = started["instance_id"]
        done = await _call(session, "instance_result", instance_id=iid, wait=60)
        assert done["status"] == "completed", done
        assert done["output"] == {"item": "tea", "total": 12, "note": ""}
        status = await _call(session, "instance_status", instance_id=iid)
        assert status["input"] == {"order": {"item": "tea", "quantity": 4}, "note": ""}
        listed = await _call(session, "list_instances", workflow="mcp.order")
        assert [row["instance_id"] for row in listed["instances"]] == [iid]


async def test_an_event_sent_as_a_tool_wakes_a_waiting_workflow(
    connect: Connect, store_url: str, tmp_path: Path
) -> None:
    async with connect(store_url, tmp_path) as session:
        iid = (await _call(session, "start_mcp.approval", request="refund"))["instance_id"]

        async def waiting() -> str:
            return str((await _call(session, "instance_status", instance_id=iid))["status"])

        for _ in range(1200):
            if await waiting() == "waiting_for_event":
                break
            await asyncio.sleep(0.05)
        assert await waiting() == "waiting_for_event"
        early = await _call(session, "instance_result", instance_id=iid)
        assert early["status"] == "waiting_for_event" and early["output"] is None
        sent = await _call(
            session, "send_event", type="mcp.decided", data={"decision": "yes"}, id="d-1"
        )
        assert sent == {"type": "mcp.decided", "id": "d-1", "instance_id": None,
                        "duplicate": False}  # fmt: skip
        done = await _call(session, "instance_result", instance_id=iid, wait=60)
        assert (done["status"], done["output"]) == ("completed", "refund: yes")


async def test_bad_input_is_a_tool_error_and_stores_nothing(
    connect: Connect, store_url: str, tmp_path: Path
) -> None:
    async with connect(store_url, tmp_path) as session:
        wrong = await _refusal(session, "start_mcp.order", order={"item": "tea", "quantity": "x"})
        assert "InvalidArgumentsError" in wrong and "quantity" in wrong
        missing = await _refusal(session, "start_mcp.order", note="no order")
        assert "order" in missing
        extra = await _refusal(session, "start_mcp.order", order={"item": "a"}, colour="red")
        assert "colour" in extra
        unknown = await _refusal(session, "instance_status", instance_id="no-such-instance")
        assert "WorkflowNotFound" in unknown and "no-such-instance" in unknown
        assert "instance_id" in await _refusal(session, "instance_result")
        with pytest.raises(MCPError, match="unknown tool"):
            await session.call_tool("start_nothing", {})
    assert _instances(store_url) == []


async def test_a_client_only_server_leaves_the_runs_to_workers(
    store_url: str, tmp_path: Path
) -> None:
    async with _stdio(store_url, tmp_path, "--max-concurrent", "0") as session:
        iid = (await _call(session, "start_mcp.order", order={"item": "pen"}))["instance_id"]
        pending = await _call(session, "instance_result", instance_id=iid, wait=0.5)
        assert pending["status"] == "running" and pending["output"] is None
        worker = WorkerProcess(
            ["--app", APP, "--db", store_url], tmp_path, "worker", env={"ROMANCY_DB": store_url}
        )
        try:
            done = await _call(session, "instance_result", instance_id=iid, wait=120)
            assert done["status"] == "completed", (done, worker.output())
            assert done["output"]["item"] == "pen"
        finally:
            assert worker.terminate() == 0, worker.output()
    assert "a client: workers run them" in (tmp_path / "mcp.err").read_text()


async def _hold(ctx: rn.WorkflowContext, ticket: int) -> str:
    """Hold a ticket until an event releases it."""
    await ctx.wait_event("mcp.release", timeout=120)
    return f"released {ticket}"


def _registry(*names: str) -> Registry:
    registry = Registry()
    for name in names:
        registry.add_workflow(Workflow(_hold, name=name))
    return registry


async def test_the_server_in_process_names_tools_safely_and_cancels(store_url: str) -> None:
    app = rn.App(store_url, registry=_registry("tickets:hold"))
    async with app, Client(rn.ai.mcp_server(app)) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert "start_tickets_hold" in tools
        started = await client.call_tool("start_tickets_hold", {"ticket": 7})
        assert started.structured_content is not None
        iid = started.structured_content["instance_id"]
        await eventually(lambda: app.get_instance(iid).status == "waiting_for_event")
        cancelled = await client.call_tool("cancel_instance", {"instance_id": iid})
        assert not cancelled.is_error, cancelled.content
        # the status it is in now: cancelled, or still waiting if the cancel is applied at
        # the next sweep (a run here that had just suspended); either way it ends cancelled
        result = await client.call_tool("instance_result", {"instance_id": iid, "wait": 30})
        assert result.structured_content is not None
        assert result.structured_content["status"] == "cancelled"
        assert result.structured_content["cancel_reason"] == "cancelled via MCP"
        again = await client.call_tool("cancel_instance", {"instance_id": iid})
        assert again.is_error
        assert "already cancelled" in again.content[0].text  # type: ignore[union-attr]


async def test_two_workflows_that_make_one_tool_name_are_refused(store_url: str) -> None:
    registry = _registry("a:b")
    app = rn.App(store_url, registry=registry)
    clashing = rn.App(store_url, registry=_registry("a:b", "a/b"))
    with pytest.raises(ValueError, match="both make the MCP tool 'start_a_b'"):
        rn.ai.mcp_server(clashing)
    clashing.store.close()
    server = rn.ai.mcp_server(app)
    registry.add_workflow(Workflow(_hold, name="a/b"))  # registered after the server was made
    async with app, Client(server) as client:
        with pytest.raises(MCPError, match="both make the MCP tool 'start_a_b'"):
            await client.list_tools()
