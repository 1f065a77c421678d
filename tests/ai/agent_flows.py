"""Workflows with a durable Pydantic AI agent, for tests/ai/test_agent.py and its worker.

The agent's model is Pydantic AI's ``OpenAIChatModel`` with the real ``openai`` client,
pointed at the stand-in server (tests/ai/openai_server.py) whose URL the workflow gets as
input. Its tools write a ``ledger`` row through ``rn.ai.step_context().session``, in the
tool call's own transaction: a repeated call would show as a second row.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import openai
from pydantic_ai import Agent, RunContext
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import romancy_nb as rn
from tests.sql import append_row

LEDGER = "ledger"
LEDGER_COLUMNS = "instance_id TEXT, step_id TEXT, tool TEXT, arg TEXT"
FAST = rn.RetryPolicy.fixed(3, 0.001)


@dataclass(frozen=True)
class Gate:
    """Holds the tool call for ``city`` until the file ``go`` appears in ``folder``,
    after writing ``holding`` there (the crash test kills the worker meanwhile)."""

    folder: str = ""
    city: str = ""


def _record(tool: str, arg: object) -> None:
    step = rn.ai.step_context()
    append_row(
        step.session, LEDGER, LEDGER_COLUMNS, (step.instance_id, step.step_id, tool, str(arg))
    )


def _build(base_url: str) -> rn.ai.RomancyAgent:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0)
    model = OpenAIChatModel("m-1", provider=OpenAIProvider(openai_client=client))
    agent = Agent(model, name="travel", deps_type=Gate)

    @agent.tool
    async def book(ctx: RunContext[Gate], city: str) -> str:
        """Book a hotel in ``city``."""
        if ctx.deps.city == city:
            folder = Path(ctx.deps.folder)
            (folder / "holding").touch()
            while not (folder / "go").exists():
                await asyncio.sleep(0.02)
        _record("book", city)
        return f"booked {city}"

    @agent.tool_plain(requires_approval=True)
    async def pay(amount: int) -> str:
        """Pay ``amount`` euros (a human approves first)."""
        _record("pay", amount)
        return f"paid {amount}"

    return rn.ai.RomancyAgent(
        agent,
        model_retry=FAST,
        tool_retry=FAST,
        compensations={"book": lambda ctx, city: _record("unbook", city)},
    )


_agents: dict[str, rn.ai.RomancyAgent] = {}


def travel_agent(base_url: str) -> rn.ai.RomancyAgent:
    """One durable agent per server URL (its steps are registered once)."""
    if base_url not in _agents:
        _agents[base_url] = _build(base_url)
    return _agents[base_url]


@rn.workflow
async def ai_trip(ctx: rn.WorkflowContext, base_url: str, prompt: str, gate: Gate = Gate()) -> str:
    result = await travel_agent(base_url).run(ctx, prompt, deps=gate)
    return str(result.output)


@rn.workflow
async def ai_trip_then_fail(ctx: rn.WorkflowContext, base_url: str, prompt: str) -> str:
    await travel_agent(base_url).run(ctx, prompt, deps=Gate())
    raise rn.TerminalError("the trip was called off")


@rn.workflow
async def ai_two_turns(ctx: rn.WorkflowContext, base_url: str, first: str, second: str) -> str:
    agent = travel_agent(base_url)
    turn = await agent.run(ctx, first, deps=Gate())
    turn = await agent.run(ctx, second, deps=Gate(), message_history=turn.all_messages())
    return str(turn.output)


def _geo_agent(base_url: str, log: str) -> rn.ai.RomancyAgent:
    from fastmcp import Client
    from fastmcp.client.transports import PythonStdioTransport
    from pydantic_ai.mcp import MCPToolset

    client = openai.AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0)
    model = OpenAIChatModel("m-1", provider=OpenAIProvider(openai_client=client))
    script = Path(__file__).with_name("mcp_tools.py")
    geo = MCPToolset(Client(PythonStdioTransport(script, args=[log])), id="geo")
    return rn.ai.RomancyAgent(Agent(model, name="geo", toolsets=[geo]), model_retry=FAST)


_geo_agents: dict[tuple[str, str], rn.ai.RomancyAgent] = {}


@rn.workflow
async def ai_geo(ctx: rn.WorkflowContext, base_url: str, log: str, prompt: str) -> str:
    agent = _geo_agents.setdefault((base_url, log), _geo_agent(base_url, log))
    return str((await agent.run(ctx, prompt)).output)
