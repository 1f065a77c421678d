"""An order saga: reserve stock, charge the card, ship — and undo in reverse when shipping fails.

``romancy-nb demo`` runs :func:`run_demo`; read this file as the example it is::

    app = rn.App("orders.db", registry=registry)
    receipt = app.run(order_flow, Order(order_id="A-1", item="lamp", quantity=2, amount=59.8))

The definitions live in their own :class:`~romancy_nb.Registry` rather than the process-wide
one, so that the demo can run inside a process that has imported other workflows with the
same names (a user's module, a test suite) without either replacing the other. Code of your
own would usually write plain ``@rn.activity`` and ``@rn.workflow``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import romancy_nb as rn

registry = rn.Registry()
"""The registry these definitions are added to; pass it to ``App(..., registry=registry)``."""

UNSHIPPABLE = "Atlantis"
"""The one destination the courier refuses: an order shipped there fails terminally."""

say: Callable[[str], Any] = print
"""Where the activities narrate their side effects (the demo points it at its console)."""


class Order(BaseModel):
    """What the customer ordered."""

    order_id: str
    item: str
    quantity: int
    amount: float
    ship_to: str = "Lisbon"


class Receipt(BaseModel):
    """What a completed order returns."""

    order_id: str
    reservation: str
    payment: str
    tracking: str


@rn.activity(registry=registry)
async def reserve_inventory(ctx: rn.ActivityContext, order: Order) -> str:
    say(f"  [{order.order_id}] reserve {order.quantity} × {order.item}")
    return f"res-{order.order_id}"


@reserve_inventory.compensation
async def release_inventory(ctx: rn.ActivityContext, order: Order) -> None:
    say(f"  [{order.order_id}] compensate: release {order.quantity} × {order.item}")


@rn.activity(registry=registry)
async def charge_payment(ctx: rn.ActivityContext, order: Order) -> str:
    say(f"  [{order.order_id}] charge {order.amount:.2f}")
    return f"pay-{order.order_id}"


@charge_payment.compensation
async def refund_payment(ctx: rn.ActivityContext, order: Order) -> None:
    say(f"  [{order.order_id}] compensate: refund {order.amount:.2f}")


@rn.activity(registry=registry)
async def ship_order(ctx: rn.ActivityContext, order: Order) -> str:
    if order.ship_to == UNSHIPPABLE:
        say(f"  [{order.order_id}] ship to {order.ship_to}: refused by the courier")
        # A TerminalError is never retried: the workflow fails at once and the saga unwinds.
        raise rn.TerminalError(f"the courier does not deliver to {order.ship_to}")
    say(f"  [{order.order_id}] ship to {order.ship_to}")
    return f"track-{order.order_id}"


@rn.workflow(registry=registry)
async def order_flow(ctx: rn.WorkflowContext, order: Order) -> Receipt:
    """Reserve, charge, ship. If a step fails, completed steps are compensated in reverse."""
    reservation = await reserve_inventory(ctx, order)
    payment = await charge_payment(ctx, order)
    tracking = await ship_order(ctx, order)
    return Receipt(
        order_id=order.order_id, reservation=reservation, payment=payment, tracking=tracking
    )


DEMO_ORDERS = (
    Order(order_id="A-1", item="lamp", quantity=2, amount=59.80, ship_to="Lisbon"),
    Order(order_id="B-2", item="sofa", quantity=1, amount=899.00, ship_to=UNSHIPPABLE),
)


def run_demo(db: str | Path) -> list[tuple[str, Receipt | BaseException]]:
    """Run each demo order to its end with ``app.run``; return (instance id, outcome) pairs.

    Instance ids get a random suffix so that running the demo twice on one database starts
    new instances instead of returning the first run's (an id is an idempotency key).
    """
    app = rn.App(db, registry=registry)
    outcomes: list[tuple[str, Receipt | BaseException]] = []
    for order in DEMO_ORDERS:
        iid = f"order-{order.order_id}-{uuid.uuid4().hex[:6]}"
        try:
            outcome: Receipt | BaseException = app.run(order_flow, order, instance_id=iid)
        except rn.RomancyError as error:
            outcome = error
        outcomes.append((iid, outcome))
    return outcomes
