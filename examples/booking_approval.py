"""Booking with human approval: wait for an event with a timeout, compensate if none comes.

Two trips are booked. Each reserves a flight and a hotel, then waits (durably: no coroutine,
no lease held) for a ``booking.approved`` event about it. A manager approves the first; the
second gets no answer, its ``wait_event`` times out, and the saga releases what it reserved.

    python examples/booking_approval.py [--db PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import romancy_nb as rn


@rn.activity
async def reserve_flight(ctx: rn.ActivityContext, trip: str) -> str:
    print(f"  {trip}: flight reserved")
    return f"FL-{trip}"


@reserve_flight.compensation
async def cancel_flight(ctx: rn.ActivityContext, trip: str) -> None:
    print(f"  {trip}: flight released")


@rn.activity
async def reserve_hotel(ctx: rn.ActivityContext, trip: str) -> str:
    print(f"  {trip}: hotel reserved")
    return f"HT-{trip}"


@reserve_hotel.compensation
async def cancel_hotel(ctx: rn.ActivityContext, trip: str) -> None:
    print(f"  {trip}: hotel released")


@rn.workflow
async def book_trip(ctx: rn.WorkflowContext, trip: str, timeout: float) -> dict:
    await ctx.subscribe(f"booking.approved.{trip}")  # an early answer is kept for us
    flight = await reserve_flight(ctx, trip)
    hotel = await reserve_hotel(ctx, trip)
    try:
        approval = await ctx.wait_event(f"booking.approved.{trip}", timeout=timeout)
    except rn.EventTimeoutError:
        # Failing the workflow runs the compensations of every completed step, in reverse.
        raise rn.TerminalError(f"nobody approved {trip} within {timeout:g} s") from None
    return {"trip": trip, "flight": flight, "hotel": hotel, "approved_by": approval.data["by"]}


async def main(db: Path) -> None:
    async with rn.App(db) as app:
        approved = await app.start(book_trip, "lisbon", 30.0)
        ignored = await app.start(book_trip, "oslo", 0.5)
        for iid in (approved, ignored):
            while app.get_instance(iid).status != "waiting_for_event":
                await asyncio.sleep(0.01)
        print("both trips wait for approval (status waiting_for_event)")
        await app.send_event("booking.approved.lisbon", {"by": "manager"}, source="inbox")
        print("approved lisbon:", await app.result(approved))
        try:
            await app.result(ignored)
        except rn.TerminalError as error:
            print(f"oslo failed: {error}; status {app.get_instance(ignored).status}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path(tempfile.mkdtemp()) / "booking.db")
    asyncio.run(main(parser.parse_args().db))
