"""Saga: an order reserves stock and charges a card; shipping fails, so both are undone.

Compensations run in reverse order of the completed steps, each recorded as a step of its
own (``compensate:<step>``), so a crash while unwinding never undoes anything twice.

    python examples/saga.py [--db PATH]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import romancy_nb as rn


@rn.activity
def reserve_stock(ctx: rn.ActivityContext, item: str, qty: int) -> str:
    print(f"  reserved {qty} x {item}")
    return f"R-{item}"


@reserve_stock.compensation
def release_stock(ctx: rn.ActivityContext, item: str, qty: int) -> None:
    print(f"  released {qty} x {item}")


@rn.activity
def charge_card(ctx: rn.ActivityContext, amount: float) -> str:
    print(f"  charged {amount:.2f}")
    return "CH-1"


@charge_card.compensation
def refund_card(ctx: rn.ActivityContext, amount: float) -> None:
    print(f"  refunded {amount:.2f}")


@rn.activity(retry=rn.RetryPolicy.none())
def ship(ctx: rn.ActivityContext, item: str) -> str:
    raise rn.TerminalError(f"no courier for {item}")


@rn.workflow
async def place_order(ctx: rn.WorkflowContext, item: str, qty: int, amount: float) -> str:
    await reserve_stock(ctx, item, qty)
    await charge_card(ctx, amount)
    return await ship(ctx, item)


def main(db: Path) -> None:
    app = rn.App(db)
    try:
        app.run(place_order, "teapot", 2, 39.90)
    except rn.TerminalError as error:
        print(f"order failed: {error}")
    steps = app.get_history(app.list_instances(limit=1).instances[0].instance_id)
    print("history:", ", ".join(f"{s.step_id} ({s.status})" for s in steps))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path(tempfile.mkdtemp()) / "saga.db")
    main(parser.parse_args().db)
