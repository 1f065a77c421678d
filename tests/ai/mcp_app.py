"""``romancy-nb mcp --app tests.ai.mcp_app:app``: workflows for tests/ai/test_mcp.py, on
``$ROMANCY_DB``."""

from __future__ import annotations

import os

from pydantic import BaseModel

import romancy_nb as rn


class Order(BaseModel):
    item: str
    quantity: int = 1


@rn.workflow(name="mcp.order")
async def mcp_order(ctx: rn.WorkflowContext, order: Order, note: str = "") -> dict:
    """Place an order."""
    return {"item": order.item, "total": order.quantity * 3, "note": note}


@rn.workflow(name="mcp.approval")
async def mcp_approval(ctx: rn.WorkflowContext, request: str) -> str:
    """Wait for a decision on a request."""
    event = await ctx.wait_event("mcp.decided", timeout=120)
    return f"{request}: {event.data['decision']}"


app = rn.App(os.environ["ROMANCY_DB"], sweep_interval=0.2)
