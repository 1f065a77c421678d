"""Workflows for the event-ingress tests (``romancy-nb event``, ``romancy-nb serve``): an
event-handler workflow, one without the opt-in, and one that waits for an event."""

from __future__ import annotations

from pydantic import BaseModel

import romancy_nb as rn


class Signup(BaseModel):
    email: str
    plan: str = "free"


@rn.workflow(name="ingress.signup", event_handler=True)
async def ingress_signup(ctx: rn.WorkflowContext, user: Signup) -> str:
    return f"welcome {user.email} ({user.plan})"


@rn.workflow(name="ingress.private")
async def ingress_private(ctx: rn.WorkflowContext, item: str) -> str:
    return item


@rn.workflow
async def ingress_waiter(ctx: rn.WorkflowContext) -> dict:
    event = await ctx.wait_event("ingress.paid", timeout=120)
    return {"data": event.data, "id": event.id, "source": event.source}
