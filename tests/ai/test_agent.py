"""``rn.ai.RomancyAgent``: a real Pydantic AI agent (its OpenAI provider, the real ``openai``
client) against the stand-in server, on every backend: model requests and tool calls as
steps, replay without the server, retries, approvals, compensation, rewind and fork."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai import Agent

import romancy_nb as rn
from romancy_nb.testing import eventually
from tests.ai.agent_flows import LEDGER, ai_geo, ai_trip, ai_trip_then_fail, ai_two_turns
from tests.ai.openai_server import OpenAIServer, ToolCall
from tests.conftest import TableReader

MODEL = "travel__model.request"
BOOK = "travel__function_toolset__<agent>.call_tool:book"
PAY = "travel__function_toolset__<agent>.call_tool:pay"


def _user_texts(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "user"]


def _tool_results(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


def _steps(app: rn.App, iid: str) -> list[tuple[str, str]]:
    return [(s.step_id, s.status) for s in app.get_history(iid) if s.kind != "uuid"]


async def test_model_requests_and_tool_calls_are_steps(
    app: rn.App, openai_server: OpenAIServer, table_rows: TableReader
) -> None:
    openai_server.reply_tool_calls(ToolCall("book", {"city": "Lyon"}, id="c1"))
    openai_server.reply_text("Booked Lyon", prompt_tokens=12, completion_tokens=2)
    iid = await app.start(ai_trip, openai_server.base_url, "a hotel in Lyon")
    assert await app.result(iid, timeout=30) == "Booked Lyon"
    history = [s for s in app.get_history(iid) if s.kind == "activity"]
    assert [(s.step_id, s.status) for s in history] == [
        (f"{MODEL}:1", "completed"),
        (f"{BOOK}:1", "completed"),
        (f"{MODEL}:2", "completed"),
    ]
    first, tool, second = history
    request = first.input[0]
    assert request["model"] == "m-1"
    assert request["messages"][0]["parts"][0]["content"] == "a hotel in Lyon"
    assert [t["name"] for t in request["parameters"]["function_tools"]] == ["book", "pay"]
    call = first.output["result"]["parts"][0]
    assert (call["tool_name"], call["tool_call_id"]) == ("book", "c1")
    assert tool.input == [{"tool": "book", "args": {"city": "Lyon"}}]
    assert tool.output["result"]["result"] == "booked Lyon"
    assert second.output["result"]["usage"]["input_tokens"] == 12
    assert second.output["result"]["usage"]["output_tokens"] == 2
    assert second.output["latency"] > 0
    assert [row[2:] for row in table_rows(LEDGER)] == [("book", "Lyon")]
    assert _tool_results(openai_server.requests[1]) == ["booked Lyon"]


async def test_replay_returns_the_recorded_answers_without_the_server(
    store_url: str, openai_server: OpenAIServer
) -> None:
    openai_server.reply_tool_calls(ToolCall("book", {"city": "Lyon"}))
    openai_server.reply_text("Booked Lyon")
    async with rn.App(store_url) as first:
        iid = await first.start(ai_trip, openai_server.base_url, "a hotel in Lyon")
        assert await first.result(iid, timeout=30) == "Booked Lyon"
    openai_server.stop()
    async with rn.App(store_url) as second:
        report = await second.replay(iid)
    assert (report.outcome, report.result) == ("completed", "Booked Lyon")
    assert len(openai_server.requests) == 2


async def test_a_transient_model_error_is_retried(app: rn.App, openai_server: OpenAIServer) -> None:
    openai_server.reply_error(503)
    openai_server.reply_text("Hello")
    iid = await app.start(ai_trip, openai_server.base_url, "hi")
    assert await app.result(iid, timeout=30) == "Hello"
    (step,) = [s for s in app.get_history(iid) if s.kind == "activity"]
    assert (step.step_id, step.attempts) == (f"{MODEL}:1", 2)
    assert len(openai_server.requests) == 2


async def test_a_bad_request_fails_at_once(app: rn.App, openai_server: OpenAIServer) -> None:
    openai_server.reply_error(400, "unknown model")
    iid = await app.start(ai_trip, openai_server.base_url, "hi")
    with pytest.raises(rn.TerminalError, match="unknown model"):
        await app.result(iid, timeout=30)
    assert len(openai_server.requests) == 1


async def _waiting_approval(app: rn.App, iid: str) -> rn.ai.PendingApproval:
    await eventually(lambda: len(rn.ai.pending_approvals(app, iid)) == 1, timeout=30)
    (pending,) = rn.ai.pending_approvals(app, iid)
    return pending


async def test_an_approved_tool_call_runs(
    app: rn.App, openai_server: OpenAIServer, table_rows: TableReader
) -> None:
    openai_server.reply_tool_calls(ToolCall("pay", {"amount": 30}, id="p1"))
    openai_server.reply_text("Paid")
    iid = await app.start(ai_trip, openai_server.base_url, "pay the hotel")
    pending = await _waiting_approval(app, iid)
    assert (pending.tool, pending.args, pending.tool_call_id) == ("pay", {"amount": 30}, "p1")
    assert table_rows(LEDGER) == []  # not run before the decision
    assert rn.ai.pending_approvals(app) == [pending]  # all instances
    await rn.ai.approve(app, iid, "p1")
    assert await app.result(iid, timeout=30) == "Paid"
    assert [row[2:] for row in table_rows(LEDGER)] == [("pay", "30")]
    assert _tool_results(openai_server.requests[1]) == ["paid 30"]
    steps = [step for step, _ in _steps(app, iid)]
    assert steps == [
        f"{MODEL}:1",
        "rn.ai.approval:1",
        "rn.ai.approval:p1",
        f"{PAY}:1",
        f"{MODEL}:2",
    ]
    assert rn.ai.pending_approvals(app, iid) == []


async def test_a_rejected_tool_call_tells_the_model_why(
    app: rn.App, openai_server: OpenAIServer, table_rows: TableReader
) -> None:
    openai_server.reply_tool_calls(ToolCall("pay", {"amount": 900}, id="p1"))
    openai_server.reply_text("Not paid")
    iid = await app.start(ai_trip, openai_server.base_url, "pay the hotel")
    await _waiting_approval(app, iid)
    await rn.ai.approve(app, iid, "p1", approved=False, reason="too expensive")
    assert await app.result(iid, timeout=30) == "Not paid"
    assert table_rows(LEDGER) == []
    assert _tool_results(openai_server.requests[1]) == ["too expensive"]


async def test_approving_what_nobody_waits_for_is_refused(
    app: rn.App, openai_server: OpenAIServer
) -> None:
    openai_server.reply_tool_calls(ToolCall("pay", {"amount": 30}, id="p1"))
    iid = await app.start(ai_trip, openai_server.base_url, "pay the hotel")
    await _waiting_approval(app, iid)
    with pytest.raises(rn.RomancyError, match="not waiting for a decision on tool call 'p2'"):
        await rn.ai.approve(app, iid, "p2")
    with pytest.raises(TypeError, match="approved must be"):
        await rn.ai.approve(app, iid, "p1", approved="yes")  # type: ignore[arg-type]


async def test_the_panel_shows_the_call_and_approves_it(
    app: rn.App, openai_server: OpenAIServer, table_rows: TableReader
) -> None:
    from romancy_nb.notebook.widgets import InstanceView

    openai_server.reply_tool_calls(ToolCall("pay", {"amount": 30}, id="p1"))
    openai_server.reply_text("Paid")
    iid = await app.start(ai_trip, openai_server.base_url, "pay the hotel")
    await _waiting_approval(app, iid)
    view = InstanceView(app, iid)
    assert view.timeline.waiting["approval"] == {
        "tool_call_id": "p1",
        "tool": "pay",
        "args": {"amount": 30},
    }
    assert "pay" in view.approval.value and "30" in view.approval.value
    view.approve_button.click()
    assert await app.result(iid, timeout=30) == "Paid"
    assert [row[2:] for row in table_rows(LEDGER)] == [("pay", "30")]


async def test_the_panel_rejects_with_the_editors_reason(
    app: rn.App, openai_server: OpenAIServer
) -> None:
    from romancy_nb.notebook.widgets import InstanceView

    openai_server.reply_tool_calls(ToolCall("pay", {"amount": 900}, id="p1"))
    openai_server.reply_text("Not paid")
    iid = await app.start(ai_trip, openai_server.base_url, "pay the hotel")
    await _waiting_approval(app, iid)
    view = InstanceView(app, iid)
    view.event_data.value = '{"reason": "ask for a discount"}'
    view.reject_button.click()
    assert await app.result(iid, timeout=30) == "Not paid"
    assert _tool_results(openai_server.requests[1]) == ["ask for a discount"]


async def test_a_failed_workflow_compensates_its_tool_calls(
    app: rn.App, openai_server: OpenAIServer, table_rows: TableReader
) -> None:
    openai_server.reply_tool_calls(ToolCall("book", {"city": "Lyon"}))
    openai_server.reply_text("Booked")
    iid = await app.start(ai_trip_then_fail, openai_server.base_url, "a hotel in Lyon")
    with pytest.raises(rn.TerminalError, match="called off"):
        await app.result(iid, timeout=30)
    assert [row[2:] for row in table_rows(LEDGER)] == [("book", "Lyon"), ("unbook", "Lyon")]
    compensations = [s for s in app.get_history(iid) if s.kind == "compensation"]
    assert [(s.step_id, s.status) for s in compensations] == [(f"compensate:{BOOK}:1", "completed")]


async def test_rewind_to_a_tool_call_asks_the_model_again_from_there(
    app: rn.App, openai_server: OpenAIServer, table_rows: TableReader
) -> None:
    openai_server.reply_tool_calls(ToolCall("book", {"city": "Lyon"}))
    openai_server.reply_text("Booked Lyon")
    iid = await app.start(ai_trip, openai_server.base_url, "a hotel in Lyon")
    assert await app.result(iid, timeout=30) == "Booked Lyon"
    openai_server.reply_text("Booked Lyon, again")
    await app.rewind(iid, to=f"{BOOK}:1")
    assert await app.result(iid, timeout=30) == "Booked Lyon, again"
    assert len(openai_server.requests) == 3
    assert openai_server.requests[2]["messages"] == openai_server.requests[1]["messages"]
    assert [row[2:] for row in table_rows(LEDGER)] == [("book", "Lyon")]  # not booked twice


async def test_a_fork_asks_the_model_with_the_edited_prompt(
    app: rn.App, openai_server: OpenAIServer
) -> None:
    openai_server.reply_text("Lyon is nice")
    openai_server.reply_text("Two nights")
    iid = await app.start(ai_two_turns, openai_server.base_url, "where to?", "how long?")
    assert await app.result(iid, timeout=30) == "Two nights"
    openai_server.reply_text("Three nights")
    fork = await app.fork(iid, at=f"{MODEL}:1", input={"second": "how long, really?"})
    assert await app.result(fork, timeout=30) == "Three nights"
    assert len(openai_server.requests) == 3  # the first turn was not asked again
    assert _user_texts(openai_server.requests[2]) == ["where to?", "how long, really?"]
    assert [
        m["content"] for m in openai_server.requests[2]["messages"] if m["role"] == "assistant"
    ] == ["Lyon is nice"]
    assert await app.result(iid) == "Two nights"  # the original is untouched


async def test_bad_arguments_fail_at_the_call(app: rn.App) -> None:
    with pytest.raises(TypeError, match="wraps a pydantic_ai Agent"):
        rn.ai.RomancyAgent("travel")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a name"):
        rn.ai.RomancyAgent(Agent("test"))
    with pytest.raises(TypeError, match="must be callable"):
        rn.ai.RomancyAgent(Agent("test", name="a"), compensations={"book": "undo"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="workflow's context first"):
        await rn.ai.RomancyAgent(Agent("test", name="a")).run("hello")  # type: ignore[arg-type]
    with pytest.raises(rn.RomancyError, match="only available inside a tool"):
        rn.ai.step_context()


async def test_an_mcp_servers_tools_are_steps(
    store_url: str, openai_server: OpenAIServer, tmp_path: Path
) -> None:
    log = tmp_path / "mcp-calls.log"
    openai_server.reply_tool_calls(ToolCall("distance", {"a": "Lyon", "b": "Rome"}))
    openai_server.reply_text("80 km")
    async with rn.App(store_url) as app:
        iid = await app.start(ai_geo, openai_server.base_url, str(log), "how far?")
        assert await app.result(iid, timeout=60) == "80 km"
        history = [s for s in app.get_history(iid) if s.kind == "activity"]
    assert [s.step_id for s in history] == [
        "geo__mcp_server__geo.get_tools:1",
        "geo__model.request:1",
        "geo__mcp_server__geo.call_tool:1",
        "geo__model.request:2",
    ]
    assert "distance" in json.dumps(history[0].output)
    assert history[2].input == [{"tool": "distance", "args": {"a": "Lyon", "b": "Rome"}}]
    assert _tool_results(openai_server.requests[1]) == ["80"]
    assert log.read_text() == "Lyon-Rome\n"
    openai_server.stop()
    async with rn.App(store_url) as again:
        report = await again.replay(iid)
    assert (report.outcome, report.result) == ("completed", "80 km")
    assert log.read_text() == "Lyon-Rome\n"  # the MCP server was not called again
