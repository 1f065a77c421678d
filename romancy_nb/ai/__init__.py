"""Durable AI: model calls, agents and tools as recorded steps (``rn.ai``).

Above the engine and below the CLI and the notebook layer: a model request or a tool call
is an activity, so a crash, a replay or a rewind never asks the model twice for what the
history already holds.
"""

from romancy_nb.ai.agent import (
    PendingApproval,
    RomancyAgent,
    RomancyDurability,
    approve,
    pending_approvals,
    step_context,
)
from romancy_nb.ai.chat import ChatAnswer, ChatRequest, Usage, chat
from romancy_nb.ai.mcp import mcp_server

__all__: list[str] = [
    "ChatAnswer",
    "ChatRequest",
    "PendingApproval",
    "RomancyAgent",
    "RomancyDurability",
    "Usage",
    "approve",
    "chat",
    "mcp_server",
    "pending_approvals",
    "step_context",
]
